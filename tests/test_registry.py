"""weightdecay.registry: the one table of names equals what the loaders, builders, optimizer
classes and figure functions can build; import strings resolve (or fail in one line); and
the one best-setting rule, which every view uses, on a case where the two rules it replaced
disagreed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import weightdecay.optim
from test_data import write_cifar
from test_report import make_record
from weightdecay import registry
from weightdecay.harness.config import RunConfig
from weightdecay.harness.data import load_dataset
from weightdecay.harness.models import build_model
from weightdecay.report import curves, figures
from weightdecay.report.model import build_report, setting_rows
from weightdecay.report.tables import summary_table

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ names


def _loaded(name, tmp_path):
    if name == "cifar10":
        write_cifar(tmp_path / "cifar-10-batches-py", n_per_batch=4, n_test=4)
        return load_dataset(name, root=tmp_path)
    return load_dataset(name)  # mnist1d: generated offline, cached


@pytest.mark.parametrize("name", registry.DATASETS)
def test_every_dataset_loads_as_its_entry_says(name, tmp_path):
    entry = registry.dataset(name)
    ds = _loaded(name, tmp_path)
    assert ds.name == name and ds.input_shape == entry.input_shape
    assert registry.model(entry.default_model)  # its default model is a registered one
    model = build_model(entry.default_model, ds, width=4)
    assert model(ds.x_test[:2]).shape == (2, ds.num_classes)
    if not entry.generated:
        with pytest.raises(ValueError, match="test_size"):
            load_dataset(name, root=tmp_path, test_size=10)


_SHAPES = {"(C, L)": [(1, 40)], "(C, H, W)": [(1, 8, 8), (3, 32, 32)],
           "any": [(1, 40), (1, 8, 8), (3, 32, 32)]}


@pytest.mark.parametrize("name", registry.MODELS)
def test_every_model_builds_for_the_inputs_its_entry_names_and_no_others(name):
    entry = registry.model(name)
    assert entry.inputs in _SHAPES
    for shape in {s for shapes in _SHAPES.values() for s in shapes}:
        fits = shape in _SHAPES[entry.inputs]
        if fits:
            model = build_model(name, input_shape=shape, num_classes=3, width=4)
            assert model(torch.randn(2, *shape)).shape == (2, 3)
            same = build_model(name, input_shape=shape, num_classes=3,
                               **{entry.width_option: 4})  # the option width sets
            assert sum(p.numel() for p in same.parameters()) == \
                sum(p.numel() for p in model.parameters())
        else:
            with pytest.raises(ValueError, match=name):
                build_model(name, input_shape=shape, num_classes=3, width=4)


def test_the_optimizers_are_the_classes_of_the_library():
    classes = {obj.__name__ for obj in vars(weightdecay.optim).values()
               if isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)}
    assert {registry.optimizer(n).label for n in registry.OPTIMIZERS} == classes
    for name in registry.OPTIMIZERS:
        cls = registry.optimizer(name).cls()
        assert cls.__name__ == registry.optimizer_label(name)
        assert registry.is_decoupled(name) is bool(cls.decoupled)  # read, not written
    assert [n for n in registry.OPTIMIZERS if registry.is_decoupled(n)] == ["sgdw", "adamw"]
    assert registry.optimizer_label("adamw", "restarts") == "AdamWR"


def test_every_figure_function_is_registered_and_resolves():
    modules = {"weightdecay.report.figures": figures, "weightdecay.report.curves": curves}
    drawn = {f"{m}:{n}" for m, mod in modules.items() for n in mod.__all__
             if n.startswith(("fig", "supp"))}
    targets = {registry.figure(n).target for n in registry.FIGURES}
    assert drawn == targets
    for name in registry.FIGURES:
        module, _, function = registry.figure(name).target.partition(":")
        assert registry.resolve("figure", name) is getattr(modules[module], function)
        tag = registry.figure(name).tag
        assert tag is None or tag in registry.EXPERIMENTS


def test_setting_fields_are_the_run_config_but_the_seed():
    fields = [f.name for f in dataclasses.fields(RunConfig) if f.name != "seed"]
    assert registry.SETTING_FIELDS == ("experiment", *fields)


def test_import_strings_resolve_or_fail_in_one_line():
    assert registry.resolve("model", "weightdecay.harness.models:_mlp") is \
        registry.resolve("model", "mlp")
    import os.path

    assert registry.resolve("dataset", "os.path:join") is os.path.join
    for name, needle in (("nope", "unknown model name 'nope'"),
                         ("a b:c", "not an import string"),
                         ("no_such_module_xyz:f", "cannot import module"),
                         ("os.path:no_such_function", "no callable"),
                         ("os:sep", "no callable")):
        with pytest.raises(ValueError, match=needle) as e:
            registry.resolve("model", name)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="kind"):
        registry.resolve("optimizer", "sgd")


def test_run_config_takes_the_registry_names_and_import_strings():
    for name in registry.DATASETS:
        RunConfig(dataset=name, model=registry.dataset(name).default_model)
    RunConfig(dataset="os.path:join")  # checked for form only: nothing is imported
    for bad, needle in (("mylab", "valid names"), ("a b:c", "not an import string"),
                        ("mylab:", "not an import string")):
        with pytest.raises(ValueError, match=needle):
            RunConfig(model=bad)


# ------------------------------------------------------------------------------ best setting


def _old_terminal_rule(records):
    """report/tables.py before the one rule: a diverged seed was left out and the setting
    averaged over the seeds that survived."""
    settings = {}
    for r in records:
        if not r.get("diverged"):
            settings.setdefault(r["lr"], []).append(r["final_test_error"])
    return min(settings, key=lambda lr: sum(settings[lr]) / len(settings[lr]))


def _old_html_rule(records):
    """report/html.py before the one rule: a setting with a diverged seed was never best."""
    settings = {}
    for r in records:
        settings.setdefault(r["lr"], []).append(r)
    ok = {lr: rs for lr, rs in settings.items() if not any(r["diverged"] for r in rs)}
    return min(ok, key=lambda lr: sum(r["final_test_error"] for r in ok[lr]) / len(ok[lr]))


def _disagreeing_records():
    """Setting A (lr 0.1): one seed at 5 % error, the other diverged; setting B (lr 0.2):
    both seeds at about 8 %."""
    return [make_record("adamw", 0.1, 1e-3, 0.05, seed=0, n=0),
            make_record("adamw", 0.1, 1e-3, 0.05, seed=1, n=1, diverged=True),
            make_record("adamw", 0.2, 1e-3, 0.08, seed=0, n=2),
            make_record("adamw", 0.2, 1e-3, 0.08, seed=1, n=3),
            make_record("adamw", 0.4, 1e-3, 0.2, seed=0, n=4, state="RUNNING")]


def test_the_one_rule_where_the_two_old_rules_disagreed(tmp_path):
    records = _disagreeing_records()
    done = [r for r in records if r["state"] == "COMPLETE"]
    assert _old_terminal_rule(done) == 0.1 and _old_html_rule(done) == 0.2  # they disagreed
    best = registry.best_setting(records)
    assert best is not None and best.setting["lr"] == 0.2 and len(best.runs) == 2
    assert best.error == pytest.approx(sum(r["final_test_error"] for r in records[2:4]) / 2)
    # every view names the same winner: the terminal table, report.html, stats.json, Fig. 3
    table = summary_table(records).splitlines()
    assert table[2].split()[-2] == "0.2"  # the lr column
    report = build_report(records, n_boot=20)
    (row,) = report.settings
    assert row.best.setting["lr"] == 0.2 and (row.runs, row.complete, row.diverged) == (5, 4, 1)
    assert report.to_dict()["best_settings"][0]["best"]["lr"] == 0.2
    from weightdecay.report.html import write_html

    text = write_html(report, tmp_path).read_text()
    best_html = text[text.index("<h2>Best settings</h2>"):]
    assert "<td>0.2</td>" in best_html and "<td>0.1</td>" not in best_html
    fig3 = curves.fig3([dict(r, figure="fig3", optimizer=o) for o in ("adam", "adamw")
                         for r in records])
    legend = [t.get_text() for ax in fig3.axes if ax.get_legend()
              for t in ax.get_legend().get_texts()]
    assert any("best: α=0.2" in t for t in legend) and not any("α=0.1" in t for t in legend)


def test_best_setting_ties_unfinished_runs_and_nothing_left():
    a = dict(make_record("sgdw", 0.1, 0.0, 0.1, n=0), final_test_error=0.1)
    b = dict(make_record("sgdw", 0.2, 0.0, 0.1, n=1), final_test_error=0.1)
    assert registry.best_setting([a, b]).setting["lr"] == 0.1  # ties: the first met
    assert registry.best_setting([b, a]).setting["lr"] == 0.2
    running = make_record("sgdw", 0.4, 0.0, 0.01, n=2, state="RUNNING")
    assert registry.best_setting([a, running]).setting["lr"] == 0.1
    diverged = make_record("sgdw", 0.1, 0.0, 0.1, n=3, diverged=True)
    assert registry.best_setting([diverged, running]) is None
    # a setting is every field but the seed: another decay convention is another setting
    other = dict(make_record("sgdw", 0.1, 0.0, 0.05, n=4, seed=1), decay_convention="lr",
                 final_test_error=0.05)
    assert registry.best_setting([a, other]).runs == (other,)
    rows = setting_rows([a, other, running])
    assert [(r.runs, r.complete, r.best.error) for r in rows] == [(3, 2, other["final_test_error"])]

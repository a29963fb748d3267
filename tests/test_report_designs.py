"""A report for every sweep the command line accepts (issue 17, item 2).

``weightdecay report`` must exit 0 and write a self-contained report.html for any design:
any grid shape, divergence pattern, trial state and figure tag. Where something cannot be
estimated the report says so where the number would stand, and a claim is scored only where
the design can decide it (at least 2 seeds; for a slope, at least 3 rows with an interior
optimum), else "not scored: underpowered (...)".

The designs are synthetic trial records written into a SQLite store the way a worker writes
them (no training): a property test over generated small designs (hypothesis), then the
repros the issue lists, each as a class of cases.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightdecay import cli, registry
from weightdecay.harness.config import RunConfig
from weightdecay.harness.vectors import pack_wrong

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

N_TEST = 100
#: examples per run of the property test (raise it to search harder: the CI runs the default)
EXAMPLES = int(os.environ.get("WEIGHTDECAY_DESIGN_EXAMPLES", "8"))


@pytest.fixture(autouse=True)
def _few_replicates(monkeypatch):
    # the report's bootstrap: 2000 replicates by default; 30 exercise the same code paths
    monkeypatch.setattr("weightdecay.report.resample.DEFAULT_REPLICATES", 30)


def _trial(config: dict, *, tag, state, err, diverged, rng, n):
    """One trial as a worker stores it (:mod:`weightdecay.harness.worker`)."""
    epochs = config["epochs"]
    attrs = {"key": f"{n:016x}", "config": config, "experiment": tag or "untagged",
             "figure": tag}
    value = None
    if state == "COMPLETE":
        wrong = rng.random(N_TEST) < err
        final = float(wrong.mean())
        every = config["eval_every"]
        errors = [final if e == epochs else (float(rng.uniform(0, 1)) if e % every == 0
                                             else math.nan) for e in range(1, epochs + 1)]
        if diverged:
            errors[-1] = math.nan
        attrs.update(final_test_error=None if diverged else final, best_test_error=None,
                     final_train_loss=None if diverged else err, diverged=diverged,
                     wall_seconds=1.0, num_test=N_TEST,
                     history={"epoch": list(range(1, epochs + 1)),
                              "train_loss": [math.nan if diverged else err] * epochs,
                              "test_error": [None if math.isnan(e) else e for e in errors],
                              "weight_norm": [1.0] * epochs, "eta": [1.0] * epochs,
                              "effective_decay": [0.0] * epochs,
                              "test_wrong": [None] * epochs})
        if not diverged:
            attrs["final_test_wrong"] = pack_wrong(wrong)
        value = 1.0 if diverged else final
    return optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state),
                                     value=value, user_attrs=attrs)


def write_store(path: Path, entries: list[dict], seed: int = 0, p_diverge: float = 0.0,
                p_unfinished: float = 0.0) -> str:
    """A store holding the runs of ``entries`` (each: RunConfig fields with ``lr`` and the
    decay key as lists, ``seeds``, ``tag``), with the error surface ``err(i, j)`` of the
    entry (default: a bowl around the middle cell); runs diverge with ``p_diverge``."""
    url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url, study_name="designs")
    study.set_user_attr("weightdecay", {"version": "test", "adopted": False})
    rng = np.random.default_rng(seed)
    trials = []
    for entry in entries:
        entry = dict(entry)
        tag, seeds = entry.pop("tag"), entry.pop("seeds")
        surface = entry.pop("err", lambda i, j: 0.1 + 0.05 * abs(j - 1) + 0.02 * i)
        key = "weight_decay_norm" if "weight_decay_norm" in entry else "weight_decay"
        lrs, decays = entry.pop("lr"), entry.pop(key)
        for i, lr in enumerate(lrs):
            for j, decay in enumerate(decays):
                for s in seeds:
                    config = RunConfig(**entry, lr=lr, seed=s, **{key: decay}).to_dict()
                    state = ("COMPLETE" if rng.random() >= p_unfinished
                             else str(rng.choice(["RUNNING", "WAITING", "FAIL"])))
                    trials.append(_trial(config, tag=tag, state=state, err=surface(i, j),
                                         diverged=bool(rng.random() < p_diverge), rng=rng,
                                         n=len(trials)))
    study.add_trials(trials)
    return url


def run_report(url: str, out: Path, capsys) -> tuple[str, dict]:
    """``weightdecay report`` on the store: exit 0, no traceback, report.html and stats.json
    written, every figure embedded (a data URI holding a PNG) and none failed to draw."""
    code = cli.main(["report", "--storage", url, "--study", "designs", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err + captured.out
    page = (out / "report.html").read_text(encoding="utf-8")
    images = re.findall(r"<img src='([^']*)'", page)
    assert images, "no figure in the page"
    for src in images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "failed to draw" not in page
    return page, json.loads((out / "stats.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ property


@st.composite
def designs(draw) -> tuple[list[dict], int, float, float]:
    """1-3 learning rates x 1-3 decay values, 1-2 seeds, any schedule and figure tag,
    sometimes a second entry that differs in one setting, random divergence and unfinished
    trials."""
    tag = draw(st.sampled_from([None, *registry.EXPERIMENTS]))
    optimizers = draw(st.lists(st.sampled_from(registry.OPTIMIZERS), min_size=1, max_size=4,
                               unique=True))
    n_lr, n_decay = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    decay_key = draw(st.sampled_from(["weight_decay", "weight_decay_norm"]))
    decays = [2.0 ** -(10 - 2 * j) for j in range(n_decay)]
    if draw(st.booleans()):
        decays[0] = 0.0  # a no-decay column: no place on a log axis
    schedule = draw(st.sampled_from(registry.SCHEDULES))
    epochs = draw(st.integers(1, 3))
    base = {"tag": tag, "seeds": list(range(draw(st.integers(1, 2)))), "schedule": schedule,
            "epochs": epochs, "eval_every": draw(st.integers(1, epochs)),
            "T_0": 1.0 if schedule == "restarts" else None, decay_key: decays}
    entries = [dict(base, optimizer=o, lr=[2.0 ** -(8 - 2 * i) for i in range(n_lr)])
               for o in optimizers]
    other = draw(st.sampled_from(["none", "epochs", "schedule", "decay_convention", "cautious",
                                  "scale_invariant_only"]))
    if other != "none":
        change = {"epochs": {"epochs": epochs + 1, "eval_every": 1},
                  "schedule": {"schedule": "fixed", "T_0": None},
                  "decay_convention": {"decay_convention": "lr"}, "cautious": {"cautious": True},
                  "scale_invariant_only": {"scale_invariant_only": True}}[other]
        first = entries[0]
        if not (other == "cautious" and not registry.is_decoupled(first["optimizer"])):
            entries.append(dict(first, **change))
    return (entries, draw(st.integers(0, 2**16)), draw(st.sampled_from([0.0, 0.3, 1.0])),
            draw(st.sampled_from([0.0, 0.2])))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(designs())
def test_every_small_design_gets_a_report(capsys, design):
    entries, seed, p_diverge, p_unfinished = design
    with tempfile.TemporaryDirectory() as tmp:
        url = write_store(Path(tmp) / "store.db", entries, seed, p_diverge, p_unfinished)
        page, stats = run_report(url, Path(tmp) / "out", capsys)
    for claim in stats["scorecard"]:  # scored only where the design can decide it
        if claim["verdict"] in ("holds", "refuted", "inconclusive") and claim["key"] != \
                "equivalence":
            seeds = {s for e in entries for s in e["seeds"]}
            assert len(seeds) >= 2, claim
    assert "Claims scorecard" in page


# ------------------------------------------------------------------------------ the repros


def _fig2(lrs, decays, seeds=(0,), optimizers=registry.OPTIMIZERS, **kw):
    return [dict({"tag": "fig2", "seeds": list(seeds), "optimizer": o, "lr": list(lrs),
                  "weight_decay": list(decays), "epochs": 2}, **kw) for o in optimizers]


LRS = [2.0**-7, 2.0**-6, 2.0**-5]


@pytest.mark.parametrize("case,entries,p_diverge,needle", [
    ("fig2_small: 4 optimizers x 3 x 3, 1 seed", _fig2(LRS, [1e-4, 2e-4, 4e-4]), 0.0,
     "not scored: underpowered (1 seed; a verdict needs at least 2)"),
    ("one decay value", _fig2(LRS, [1e-4], seeds=(0, 1)), 0.0,
     "not estimable: 1 λ value &gt; 0, and an interior optimum needs 3"),
    ("two decay values", _fig2(LRS, [1e-4, 2e-4], seeds=(0, 1)), 0.0,
     "not estimable: 2 λ values &gt; 0"),
    ("every cell diverged", _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1)), 1.0,
     "not estimable: no row has an interior optimum (3 without a finite cell)"),
    ("no interior optimum", _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1),
                                  err=lambda i, j: 0.1 + 0.05 * j), 0.0,
     "not estimable: no row has an interior optimum (3 at the edge of the cells run)"),
    ("one learning rate", _fig2(LRS[:1], [1e-4, 2e-4, 4e-4], seeds=(0, 1)), 0.0,
     "not estimable: 1 learning rate, and a slope needs 3 rows"),
])
def test_small_fig2_sweeps_say_what_cannot_be_estimated(tmp_path, capsys, case, entries,
                                                        p_diverge, needle):
    url = write_store(tmp_path / "store.db", entries, p_diverge=p_diverge)
    page, stats = run_report(url, tmp_path / "out", capsys)
    assert needle in page, case
    verdicts = {c["key"]: c["verdict"] for c in stats["scorecard"]}
    assert all(verdicts[f"fig2.{o}"] == "not scored" for o in registry.OPTIMIZERS), verdicts
    assert (tmp_path / "out" / "slopes.png").exists() and (tmp_path / "out" / "fig2.png").exists()


def test_a_slope_is_scored_with_two_seeds_and_three_interior_rows(tmp_path, capsys):
    def bowl(i, j):  # the middle decay is best in every row, far beyond the noise
        return 0.3 + 0.3 * abs(j - 1)

    entries = _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1), optimizers=["sgdw"], err=bowl)
    page, stats = run_report(write_store(tmp_path / "a.db", entries), tmp_path / "a", capsys)
    claim = next(c for c in stats["scorecard"] if c["key"] == "fig2.sgdw")
    assert claim["verdict"] in ("holds", "refuted", "inconclusive"), claim
    # the same design without its top learning rate: two rows, not scored
    entries = _fig2(LRS[:2], [1e-4, 2e-4, 4e-4], seeds=(0, 1), optimizers=["sgdw"], err=bowl)
    page, stats = run_report(write_store(tmp_path / "b.db", entries), tmp_path / "b", capsys)
    claim = next(c for c in stats["scorecard"] if c["key"] == "fig2.sgdw")
    assert claim["verdict"] == "not scored"
    assert claim["estimate_text"].startswith("not scored: underpowered (")


def test_runs_that_mix_settings_split_the_heat_maps_and_are_not_scored(tmp_path, capsys):
    """A Fig. 2 experiment over two budgets: one heat map per budget, the claims unscored
    (one heat map per optimizer cannot hold both), nothing averaged across budgets."""
    entries = _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1), optimizers=["adamw"])
    entries.append(dict(entries[0], epochs=3))
    page, stats = run_report(write_store(tmp_path / "store.db", entries), tmp_path / "o",
                             capsys)
    assert {"optimizer=adamw, epochs=2 (λ)", "optimizer=adamw, epochs=3 (λ)"} <= set(
        stats["fig2"])
    claim = next(c for c in stats["scorecard"] if c["key"] == "fig2.adamw")
    assert claim["verdict"] == "not scored" and "mixed design" in claim["detail"]
    assert "epochs" in claim["detail"]


# ------------------------------------------------------------------------------ the writes


def test_report_writes_nothing_through_a_link_out_of_out(tmp_path, capsys):
    url = write_store(tmp_path / "store.db", _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1)))
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("report.html", "stats.json", "fig2.png"):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        victim = outside / name
        victim.write_text("theirs")
        (out / name).symlink_to(victim)
        code = cli.main(["report", "--storage", url, "--study", "designs", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "outside" in err, err
        assert victim.read_text() == "theirs"
        assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written first


def test_report_files_are_replaced_atomically(tmp_path, capsys, monkeypatch):
    url = write_store(tmp_path / "store.db", _fig2(LRS, [1e-4, 2e-4, 4e-4], seeds=(0, 1)))
    out = tmp_path / "out"
    run_report(url, out, capsys)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # every write fails once its bytes are out
    code = cli.main(["report", "--storage", url, "--study", "designs", "--out", str(out)])
    assert code == 1 and "No space left" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file left

"""Sweep specs, their expansion, the Optuna store and in-process workers."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import multiprocessing
from pathlib import Path

import pytest
import torch

from weightdecay.harness import presets, store
from weightdecay.harness.config import RunConfig
from weightdecay.harness.spec import SpecError, expand_spec, load_spec, validate_spec
from weightdecay.harness.study import create_sweep, sweep_status
from weightdecay.harness.worker import run_worker
from weightdecay.report.tables import summary_table

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]

# a tiny sweep: digits + mlp, 1 epoch: well under a second per run
TINY = {
    "name": "tiny",
    "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
    "experiments": [
        {
            "name": "grid",
            "figure": "fig2",
            "schedules": ["cosine"],
            "epochs": [1],
            "seeds": [0],
            "optimizers": [
                {"optimizer": "sgdw", "lr": [0.05, 0.1], "weight_decay": [0.0, 1e-3]},
                {"optimizer": "adam", "lr": [1e-3], "weight_decay": [1e-4]},
            ],
        }
    ],
}


def tiny(**changes):
    spec = copy.deepcopy(TINY)
    spec.update(changes)
    return spec


def url(tmp_path: Path) -> str:
    return store.sqlite_url(tmp_path / "store.db")


def quiet(_line: str) -> None:
    pass


# ------------------------------------------------------------------------------ spec


def test_expand_order_and_count():
    runs = expand_spec(TINY)
    assert len(runs) == 2 * 2 + 1
    got = [(r.config.optimizer, r.config.lr, r.config.weight_decay) for r in runs]
    assert got == [
        ("sgdw", 0.05, 0.0), ("sgdw", 0.05, 1e-3), ("sgdw", 0.1, 0.0), ("sgdw", 0.1, 1e-3),
        ("adam", 1e-3, 1e-4),
    ]
    assert all(r.experiment == "grid" and r.figure == "fig2" for r in runs)
    assert all(r.config.dataset == "digits" and r.config.batch_size == 64 for r in runs)


def test_expand_is_deterministic_and_keys_unique():
    a = [r.key for r in expand_spec(TINY)]
    b = [r.key for r in expand_spec(json.loads(json.dumps(TINY)))]
    assert a == b
    assert len(set(a)) == len(a)
    # the experiment name is part of the key
    other = copy.deepcopy(TINY)
    other["experiments"][0]["name"] = "grid2"
    assert not set(a) & {r.key for r in expand_spec(other)}


def test_optimizer_entry_overrides_experiment_and_t0_only_for_restarts():
    spec = tiny()
    exp = spec["experiments"][0]
    exp["T_0"] = 1
    exp["optimizers"][1]["schedules"] = ["cosine", "restarts"]
    runs = expand_spec(spec)
    adam = [r.config for r in runs if r.config.optimizer == "adam"]
    assert [(c.schedule, c.T_0) for c in adam] == [("cosine", None), ("restarts", 1.0)]


def test_weight_decay_norm_grid():
    spec = tiny()
    spec["experiments"][0]["optimizers"] = [
        {"optimizer": "adamw", "lr": [1e-3], "weight_decay_norm": [0.025, 0.05]}
    ]
    runs = expand_spec(spec)
    assert [r.config.weight_decay_norm for r in runs] == [0.025, 0.05]


def _bad(mutate):
    spec = tiny()
    mutate(spec)
    return spec


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s.update(bogus=1), "'bogus'"),
        (lambda s: s["experiments"][0].update(lrr=[1]), "'lrr'"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(wd=[1]), "'wd'"),
        (lambda s: s["defaults"].update(optimizer="sgd"), "'optimizer'"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(lr=[]), "'lr' is empty"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(lr=[0.0]), "lr=0.0"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(lr=[-1e-3]), "lr=-0.001"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(lr=[0.1, 0.1]), "twice"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(weight_decay=[-1.0]),
         "weight_decay=-1.0"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(weight_decay_norm=[0.1]),
         "not both"),
        (lambda s: s["experiments"][0]["optimizers"][0].update(optimizer="lion"), "'lion'"),
        (lambda s: s["experiments"][0].update(schedules=["cosin"]), "'cosin'"),
        (lambda s: s["experiments"][0].update(schedules=[]), "'schedules' is empty"),
        (lambda s: s["experiments"][0].update(epochs=[0]), "epochs=0"),
        (lambda s: s["experiments"][0].update(epochs=[1.5]), "epochs=1.5"),
        (lambda s: s["experiments"][0].update(seeds=[-1]), "seeds=-1"),
        (lambda s: s["experiments"][0].update(dataset="imagenet"), "'imagenet'"),
        (lambda s: s["experiments"][0].update(model="vit"), "'vit'"),
        (lambda s: s["experiments"][0].update(figure="fig9"), "'fig9'"),
        (lambda s: s["experiments"][0].update(optimizers=[]), "'optimizers'"),
        (lambda s: s["experiments"][0].update(schedules=["restarts"]), "T_0"),
        (lambda s: s["experiments"].append(copy.deepcopy(s["experiments"][0])), "twice"),
        (lambda s: s.update(experiments=[]), "'experiments'"),
        (lambda s: s["experiments"][0]["optimizers"][0].pop("lr"), "'lr' is missing"),
    ],
)
def test_bad_specs_name_the_problem(mutate, needle):
    with pytest.raises(SpecError) as info:
        validate_spec(_bad(mutate))
    assert needle in str(info.value)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_examples_load_and_expand():
    files = sorted((ROOT / "examples").glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        runs = expand_spec(load_spec(path))
        assert runs, path


def test_load_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    with pytest.raises(SpecError, match="not valid"):
        load_spec(bad)


# ------------------------------------------------------------------------------ presets


def test_presets_expand():
    quick = expand_spec(presets.get_preset("quick"))
    assert {r.config.optimizer for r in quick} == {"sgd", "sgdw", "adam", "adamw"}
    assert all(r.config.dataset == "mnist1d" and r.config.model == "cnn1d_bn" for r in quick)
    assert all(r.config.schedule == "cosine" and r.config.test_size == 10_000 for r in quick)
    for opt in ("sgd", "sgdw", "adam", "adamw"):  # the power the design promises
        cfgs = [r.config for r in quick if r.config.optimizer == opt]
        lrs = sorted({c.lr for c in cfgs})
        assert lrs[-1] / lrs[0] >= 16
        for lr in lrs:  # each row: a band of 5 decay values, in steps of 2
            lams = sorted({c.weight_decay for c in cfgs if c.lr == lr})
            assert len(lams) == 5 and all(math.log2(b / a) == 1 for a, b in zip(lams, lams[1:]))
        assert len({c.seed for c in cfgs}) >= 2
    assert not {r.config.seed for r in quick} & {1000, 1001}  # the pilot's seeds

    full = expand_spec(presets.get_preset("full"))
    figures = {r.figure for r in full}
    assert figures == {"fig1", "fig2", "fig3", "fig4", "supp3", "conventions", "ablation"}
    fig4 = {(r.config.optimizer, r.config.schedule) for r in full if r.figure == "fig4"}
    assert fig4 == {("adam", "cosine"), ("adamw", "cosine"), ("sgdw", "cosine"),
                    ("adamw", "restarts"), ("sgdw", "restarts")}
    supp3 = [r.config for r in full if r.figure == "supp3"]
    assert {c.weight_decay_norm is None for c in supp3} == {True, False}
    assert len({c.epochs for c in supp3}) >= 3
    assert {r.config.seed for r in full if r.figure == "fig2"} == {0, 1, 2}
    ablation = [r.config for r in full if r.figure == "ablation"]
    assert {c.scale_invariant_only for c in ablation} == {True, False}
    assert {c.decay_convention for r in full if r.figure == "conventions"
            for c in [r.config]} == {"lr"}

    variants = expand_spec(presets.get_preset("variants"))
    kinds = {(r.config.optimizer, r.config.decay_convention, r.config.cautious,
              r.config.scale_invariant_only) for r in variants}
    assert len(kinds) == 10 and {k[1] for k in kinds} == {"schedule", "lr", "corrected"}

    cifar = expand_spec(presets.get_preset("cifar10"))
    assert cifar and all(
        r.config.dataset == "cifar10" and r.config.model == "shakeshake26_2x64d"
        and r.config.batch_size == 128 and r.config.epochs == 100 for r in cifar
    )


def test_get_preset_returns_a_copy_and_rejects_unknown():
    a = presets.get_preset("quick")
    a["experiments"].clear()
    assert presets.get_preset("quick")["experiments"]
    with pytest.raises(ValueError, match="'nope'"):
        presets.get_preset("nope")


# ------------------------------------------------------------------------------ store


def _trials(storage_url, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage_url).get_trials()


def test_create_sweep_twice_does_not_duplicate(tmp_path):
    u = url(tmp_path)
    first = create_sweep(TINY, u)
    assert first.study_name == "tiny" and first.enqueued == 5
    second = create_sweep(TINY, u)
    assert second.enqueued == 0
    trials = _trials(u, "tiny")
    assert len(trials) == 5
    assert sorted(t.user_attrs["key"] for t in trials) == sorted(r.key for r in first.runs)
    attrs = store.load_spec_attrs(u, "tiny")
    assert attrs["spec"] == validate_spec(TINY)
    assert {"python", "torch", "weightdecay", "optuna"} <= set(attrs["versions"])


def test_create_sweep_rejects_a_different_spec_for_the_same_study(tmp_path):
    u = url(tmp_path)
    create_sweep(TINY, u)
    other = tiny()
    other["experiments"][0]["epochs"] = [2]
    with pytest.raises(store.StoreError, match="different sweep spec"):
        create_sweep(other, u)
    assert len(_trials(u, "tiny")) == 5


def test_bad_spec_writes_nothing(tmp_path):
    bad = tiny()
    bad["experiments"][0]["optimizers"][0]["lr"] = [0.0]
    with pytest.raises(SpecError):
        create_sweep(bad, url(tmp_path))
    assert not (tmp_path / "store.db").exists()


def _create(u: str) -> int:
    return create_sweep(TINY, u).enqueued


def test_concurrent_creators_enqueue_each_key_once(tmp_path):
    u = url(tmp_path)
    # the tables exist first (Optuna's own schema creation is not concurrency-safe)
    store.open_storage(u)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        enqueued = pool.map(_create, [u, u, u, u])
    assert sum(enqueued) == 5
    keys = [t.user_attrs["key"] for t in _trials(u, "tiny")]
    assert len(keys) == len(set(keys)) == 5


@pytest.mark.parametrize(
    "bad_url", ["", "not a url", "sqlite:////nonexistent-dir-xyz/store.db", "nosuchdb://x/y"]
)
def test_bad_storage_urls(bad_url):
    with pytest.raises(store.StoreError):
        store.check_storage(bad_url)


# ------------------------------------------------------------------------------ workers


def test_worker_runs_every_trial_once_and_records(tmp_path):
    u = url(tmp_path)
    create_sweep(TINY, u)
    lines = []
    ran = run_worker(u, "tiny", out_dir=tmp_path, wait=False, log=lines.append)
    assert (ran.ran, ran.completed, ran.failed) == (5, 5, 0)
    assert sum("started" in line for line in lines) == 5
    trials = _trials(u, "tiny")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    for t in trials:
        assert 0.0 <= t.value <= 1.0
        assert t.value == t.user_attrs["final_test_error"]
    # the checkpoints of completed runs are removed
    assert list((tmp_path / "ckpt").iterdir()) == []

    records = store.load_records(u, "tiny")
    assert len(records) == 5
    r = records[0]
    for name in RunConfig.field_names():
        assert name in r
    assert r["experiment"] == "grid" and r["figure"] == "fig2"
    assert r["state"] == "COMPLETE" and r["diverged"] is False
    assert set(r["history"]) >= {"epoch", "train_loss", "test_error", "weight_norm", "eta",
                                 "effective_decay"}
    assert r["history"]["epoch"] == [1]
    assert r["final_test_error"] == r["history"]["test_error"][-1]
    # which test examples the final model got wrong travels through the store
    from weightdecay.harness.vectors import unpack_wrong

    wrong = unpack_wrong(r["final_test_wrong"], int(r["num_test"]))
    assert wrong.mean() == r["final_test_error"]
    assert r["wall_seconds"] > 0
    assert sweep_status(u, "tiny") == {"total": 5, "complete": 5, "running": 0, "waiting": 0,
                                       "failed": 0, "diverged": 0}

    # resuming: nothing is enqueued and nothing runs again
    assert create_sweep(TINY, u).enqueued == 0
    assert run_worker(u, "tiny", out_dir=tmp_path, wait=False, log=quiet).ran == 0
    assert len(_trials(u, "tiny")) == 5

    table = summary_table(records)
    assert "sgdw" in table and "adam" in table and "best err %" in table


def test_max_trials(tmp_path):
    u = url(tmp_path)
    create_sweep(TINY, u)
    assert run_worker(u, "tiny", out_dir=tmp_path, max_trials=2, wait=False, log=quiet).ran == 2
    assert sweep_status(u, "tiny")["waiting"] == 3


def test_diverged_run_is_complete_with_value_one(tmp_path):
    u = url(tmp_path)
    spec = tiny(name="div")
    spec["experiments"][0]["optimizers"] = [
        {"optimizer": "sgd", "lr": [2.0**12], "weight_decay": [0.0]}
    ]
    create_sweep(spec, u)
    run_worker(u, "div", out_dir=tmp_path, wait=False, log=quiet)
    (trial,) = _trials(u, "div")
    assert trial.state.name == "COMPLETE"
    assert trial.value == 1.0
    assert trial.user_attrs["diverged"] is True
    (record,) = store.load_records(u, "div")
    assert record["diverged"] is True and math.isnan(record["final_test_error"])
    assert sweep_status(u, "div")["diverged"] == 1


def test_failing_run_is_recorded_and_reenqueued_on_resume(tmp_path, monkeypatch):
    from weightdecay.harness import train

    u = url(tmp_path)
    spec = tiny(name="fail")
    spec["experiments"][0]["optimizers"] = [
        {"optimizer": "adamw", "lr": [1e-3], "weight_decay": [0.0]}
    ]
    create_sweep(spec, u)

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(train, "run", boom)
    assert run_worker(u, "fail", out_dir=tmp_path, wait=False, log=quiet).failed == 1
    (record,) = store.load_records(u, "fail")
    assert record["state"] == "FAIL" and "out of memory" in record["error"]
    assert sweep_status(u, "fail")["failed"] == 1

    # a second creation re-enqueues the failed key; the record is then the COMPLETE trial
    monkeypatch.undo()
    assert create_sweep(spec, u).enqueued == 1
    run_worker(u, "fail", out_dir=tmp_path, wait=False, log=quiet)
    (record,) = store.load_records(u, "fail")
    assert record["state"] == "COMPLETE"
    assert [t.state.name for t in _trials(u, "fail")] == ["FAIL", "COMPLETE"]


def test_export_csv_and_json(tmp_path):
    import csv

    u = url(tmp_path)
    create_sweep(TINY, u)
    run_worker(u, "tiny", out_dir=tmp_path, max_trials=3, wait=False, log=quiet)
    text = store.export_trials(u, "tiny", "csv", tmp_path / "t.csv")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 5
    assert (tmp_path / "t.csv").read_text() == text
    for col in ("dataset", "model", "optimizer", "lr", "weight_decay", "decay_convention",
                "schedule", "epochs", "batch_size", "seed", "state", "final_test_error",
                "best_test_error", "final_train_loss", "wall_seconds"):
        assert col in rows[0]
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 + ["WAITING"] * 2
    assert rows[4]["final_test_error"] == ""
    data = json.loads(store.export_trials(u, "tiny", "json"))
    assert len(data) == 5 and data[4]["final_test_error"] is None
    assert float(rows[0]["final_test_error"]) == data[0]["final_test_error"]
    with pytest.raises(ValueError, match="'xml'"):
        store.export_trials(u, "tiny", "xml")


def test_load_records_unknown_study(tmp_path):
    u = url(tmp_path)
    create_sweep(TINY, u)
    with pytest.raises(store.StoreError, match="'nope'.*tiny"):
        store.load_records(u, "nope")


def test_grids_not_given_take_the_run_config_defaults():
    spec = {"name": "d", "experiments": [{"name": "e", "optimizers": [
        {"optimizer": "adamw", "lr": [1e-3], "weight_decay": [0.0]}]}]}
    (run,) = expand_spec(spec)
    default = RunConfig()
    for field in ("schedule", "epochs", "batch_size", "seed", "dataset", "model"):
        assert getattr(run.config, field) == getattr(default, field), field


def test_spec_is_expanded_once(monkeypatch):
    from weightdecay.harness import spec as spec_mod

    calls = []
    real = spec_mod._cells
    monkeypatch.setattr(spec_mod, "_cells",
                        lambda e, outcomes=None: calls.append(e) or real(e, outcomes))
    plan = spec_mod.plan_sweep(TINY)
    assert len(calls) == 2 and len(plan.runs) == 5  # one expansion per optimizer entry
    assert plan.spec == validate_spec(TINY)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_status_equals_a_full_read_after_every_change(tmp_path, seed):
    """SweepStatus (the progress bar's poll, which reads only open and newly finished trials)
    counts what sweep_status's full read counts, through claims, completions, divergences,
    failures with a re-enqueued copy that may finish between two polls, and hand-backs."""
    import random

    import optuna
    from optuna.trial import TrialState

    from weightdecay.harness.study import SweepStatus

    u = url(tmp_path)
    storage = store.open_storage(u, heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name="s", storage=storage)
    sid = storage.get_study_id_from_name("s")
    for i in range(12):
        study.enqueue_trial({}, user_attrs={"key": f"k{i}"})
    tracker = SweepStatus(u, "s", storage)
    rng = random.Random(seed)
    for _ in range(60):
        trials = storage.get_all_trials(sid, deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        op = rng.choice(["claim", "finish", "fail", "release", "poll-only"])
        if op == "claim" and waiting:
            storage.set_trial_state_values(rng.choice(waiting)._trial_id, TrialState.RUNNING)
        elif op == "finish" and running:
            t = rng.choice(running)
            storage.set_trial_user_attr(t._trial_id, "diverged", rng.random() < 0.3)
            storage.set_trial_state_values(t._trial_id, TrialState.COMPLETE, [0.5])
        elif op == "fail" and running:
            t = rng.choice(running)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial({}, user_attrs={"key": t.user_attrs["key"]})
            if rng.random() < 0.5:  # the copy runs and finishes before the next poll
                copy = storage.get_all_trials(sid, deepcopy=False)[-1]
                storage.set_trial_state_values(copy._trial_id, TrialState.RUNNING)
                storage.set_trial_state_values(copy._trial_id, TrialState.COMPLETE, [0.5])
        elif op == "release" and running:
            storage.set_trial_state_values(rng.choice(running)._trial_id, TrialState.WAITING)
        if rng.random() < 0.6:
            assert tracker.poll() == sweep_status(u, "s") == _full_read(storage, "s")
    assert tracker.poll() == sweep_status(u, "s") == _full_read(storage, "s")


@functools.cache
def _bench_status():
    spec = importlib.util.spec_from_file_location("bench_status",
                                                  ROOT / "benchmarks" / "bench_status.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _full_read(storage, name: str) -> dict[str, int]:
    """The counts from every trial read at once (the definition SweepStatus must keep):
    benchmarks/bench_status.py's reference, the status of the commits before SweepStatus."""
    return _bench_status().full_read(storage, name)

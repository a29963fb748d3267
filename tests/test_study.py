"""The Optuna study of a sweep: batched enqueue, the claim protocol (the one use of Optuna's
storage interface), heartbeats and stale trials, and what a worker trusts from a store."""

from __future__ import annotations

import time

import pytest
import torch

from weightdecay.harness import store
from weightdecay.harness.study import ClaimedTrial, claim_trial, create_sweep, sweep_status
from weightdecay.harness.worker import run_worker

torch.set_num_threads(1)


def tiny(name: str, n_lr: int = 2) -> dict:
    return {
        "name": name,
        "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
        "experiments": [{"name": "grid", "epochs": [1], "optimizers": [
            {"optimizer": "sgdw", "lr": [0.05 * 2**i for i in range(n_lr)],
             "weight_decay": [0.0]}]}],
    }


def url(tmp_path) -> str:
    return store.sqlite_url(tmp_path / "store.db")


def test_enqueue_in_batches_with_progress(tmp_path, monkeypatch):
    from weightdecay.harness import study

    monkeypatch.setattr(study, "ENQUEUE_BATCH", 2)
    seen = []
    result = create_sweep(tiny("batches", n_lr=5), url(tmp_path),
                          progress=lambda done, todo: seen.append((done, todo)))
    assert result.enqueued == 5
    assert seen == [(2, 5), (4, 5), (5, 5)]
    # an interrupted enqueue is completed by the next call, exactly once per key
    assert create_sweep(tiny("batches", n_lr=5), url(tmp_path)).enqueued == 0
    assert sweep_status(url(tmp_path), "batches")["waiting"] == 5


def test_claim_is_atomic_and_never_creates_a_trial(tmp_path):
    u = url(tmp_path)
    create_sweep(tiny("claims"), u)
    storage = store.open_storage(u)
    first, second = claim_trial(storage, "claims"), claim_trial(storage, "claims")
    assert isinstance(first, ClaimedTrial) and isinstance(second, ClaimedTrial)
    assert first.number != second.number
    assert {first.user_attrs["key"], second.user_attrs["key"]} == {
        r["key"] for r in store.load_records(u, "claims")}
    assert claim_trial(storage, "claims") is None  # none left: Study.ask would add one
    assert sweep_status(u, "claims") == {"total": 2, "complete": 0, "running": 2,
                                         "waiting": 0, "failed": 0, "diverged": 0}


def test_a_trial_claimed_by_a_worker_killed_before_its_first_beat_goes_stale(tmp_path):
    """The claim itself beats once: a worker that dies right after claiming (before its
    Heartbeat thread starts) leaves a trial that another worker retries."""
    u = url(tmp_path)
    create_sweep(tiny("stale", n_lr=1), u)
    storage = store.open_storage(u, heartbeat_interval=1, grace_period=2)
    assert claim_trial(storage, "stale") is not None  # ... and the worker dies here
    time.sleep(3.5)
    lines = []
    result = run_worker(u, "stale", out_dir=tmp_path, wait=False, heartbeat_interval=1,
                        grace_period=2, log=lines.append)
    assert result.ran == 1 and result.completed == 1
    (record,) = store.load_records(u, "stale")
    assert record["state"] == "COMPLETE"
    import optuna

    states = [t.state.name for t in optuna.load_study(study_name="stale", storage=u).trials]
    assert states == ["FAIL", "COMPLETE"]


def test_a_waiting_worker_says_what_it_waits_for(tmp_path):
    u = url(tmp_path)
    create_sweep(tiny("wait", n_lr=1), u)
    storage = store.open_storage(u, heartbeat_interval=1, grace_period=2)
    assert claim_trial(storage, "wait") is not None  # its worker is gone
    lines = []
    result = run_worker(u, "wait", out_dir=tmp_path, heartbeat_interval=1, grace_period=2,
                        poll_interval=0.2, log=lines.append)
    assert result.completed == 1
    waiting = [line for line in lines if "waiting for them" in line]
    assert len(waiting) == 1, lines  # said once, not at every poll
    assert "1 are running elsewhere" in waiting[0]
    assert "no heartbeat for 2 s" in waiting[0]


@pytest.mark.parametrize("key", ["../../../escape", "/tmp/escape", "ABCDEF0123456789",
                                 None, 7])
def test_a_worker_never_builds_a_path_from_a_foreign_key(tmp_path, key):
    """A store is shared: a trial whose key is not one of this harness's 16-hex-digit keys
    fails without touching the file system."""
    import optuna

    u = url(tmp_path)
    create_sweep(tiny("keys", n_lr=1), u)
    study = optuna.load_study(study_name="keys", storage=u)
    (planned,) = study.get_trials()
    study.enqueue_trial(params={}, user_attrs={**planned.user_attrs, "key": key})
    out = tmp_path / "out"
    result = run_worker(u, "keys", out_dir=out, wait=False, log=lambda line: None)
    assert (result.completed, result.failed) == (1, 1)
    failed = [t for t in optuna.load_study(study_name="keys", storage=u).trials
              if t.state.name == "FAIL"]
    assert len(failed) == 1 and "not a trial of this harness" in failed[0].user_attrs["error"]
    assert sorted(p.name for p in tmp_path.rglob("*") if "escape" in p.name) == []
    assert [p.name for p in (out / "ckpt").iterdir()] == []


def test_enqueue_progress_lines_only_for_long_enqueues():
    import io

    from weightdecay.harness.local import enqueue_progress

    stream = io.StringIO()
    report = enqueue_progress(stream)
    report(250, 900)
    report(250, 5000)
    assert stream.getvalue() == "enqueued 250 of 5,000 runs\n"

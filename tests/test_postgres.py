"""Workers sharing one study: PostgreSQL (``WEIGHTDECAY_TEST_PG_URL``, set by CI) and SQLite.

(a) two worker processes on one study at once: every trial runs exactly once;
(b) a worker killed with SIGKILL mid-trial: after the heartbeat grace period another
    worker re-runs the trial (resuming its checkpoint); nothing is lost or duplicated;
(c) the documented multi-machine workflow: ``weightdecay sweep --plan-only`` plans the
    sweep and runs nothing; two ``weightdecay worker`` processes then complete each key
    exactly once;
(d) a worker stopped with SIGTERM (a scheduler's pre-emption) hands its trial back at once.

Workers are real ``weightdecay worker`` processes with a 1 s heartbeat and a 4 s grace.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from weightdecay.harness import store
from weightdecay.harness.study import create_sweep

PG_URL = os.environ.get("WEIGHTDECAY_TEST_PG_URL")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="WEIGHTDECAY_TEST_PG_URL is not set"),
        ],
    ),
]

STARTED = re.compile(r"trial (\d+) key=(\w+) .*: started")


def _spec(name: str, n_lr: int, epochs: int) -> dict:
    lrs = [0.05 * 2**i for i in range(n_lr)]
    return {
        "name": name,
        "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
        "experiments": [
            {
                "name": "workers",
                "schedules": ["cosine"],
                "epochs": [epochs],
                "seeds": [0],
                "optimizers": [{"optimizer": "sgdw", "lr": lrs, "weight_decay": [1e-4]}],
            }
        ],
    }


def _storage(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        return PG_URL
    return store.sqlite_url(tmp_path / "store.db")


def _worker(url: str, study: str, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "weightdecay.cli", "worker", "--storage", url, "--study", study,
        "--out", str(out), "--threads", "1", "--heartbeat-interval", "1",
        "--grace-period", "4", *extra,
    ]
    fh = open(log, "w")  # noqa: SIM115 - closed by the OS when the process ends
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _started(log: Path) -> list[str]:
    return [m.group(2) for m in STARTED.finditer(log.read_text())]


def _trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials()


def _wait(procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("worker did not finish in time")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_run_every_trial_exactly_once(backend, tmp_path):
    url = _storage(backend, tmp_path)
    study = f"two-{uuid.uuid4().hex[:8]}"
    planned = create_sweep(_spec(study, n_lr=6, epochs=3), url).runs
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_worker(url, study, tmp_path, log) for log in logs]
    _wait(procs, 240)
    assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]

    started = _started(logs[0]) + _started(logs[1])
    counts = collections.Counter(started)
    assert sorted(counts) == sorted(r.key for r in planned)
    assert set(counts.values()) == {1}, counts  # no trial ran twice
    trials = _trials(url, study)
    assert len(trials) == len(planned)
    assert all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_worker_trial_is_retried_nothing_lost(backend, tmp_path):
    url = _storage(backend, tmp_path)
    study = f"kill-{uuid.uuid4().hex[:8]}"
    # long enough (many epochs) that the worker is certainly killed mid-trial
    planned = create_sweep(_spec(study, n_lr=3, epochs=20), url).runs
    keys = sorted(r.key for r in planned)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    ckpt = tmp_path / "ckpt"

    victim = _worker(url, study, tmp_path, log_a)
    deadline = time.monotonic() + 120
    while not (ckpt.is_dir() and any(ckpt.glob("*.pt"))):  # mid-trial: after epoch 1
        assert victim.poll() is None, log_a.read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker never checkpointed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (killed_key,) = _started(log_a)  # it was inside its first trial
    assert "test error" not in log_a.read_text()

    rescuer = _worker(url, study, tmp_path, log_b)
    _wait([rescuer], 240)
    assert rescuer.returncode == 0, log_b.read_text()[-2000:]

    trials = _trials(url, study)
    by_key = collections.defaultdict(list)
    for t in trials:
        by_key[t.user_attrs["key"]].append(t.state.name)
    assert sorted(by_key) == keys  # nothing lost
    for key, states in by_key.items():
        assert states.count("COMPLETE") == 1, (key, states)  # nothing duplicated
    assert sorted(by_key[killed_key]) == ["COMPLETE", "FAIL"]
    # the rescuer ran each key once, the killed one included (resumed from its checkpoint)
    assert sorted(_started(log_b)) == keys
    records = store.load_records(url, study)
    assert len(records) == len(keys) and {r["state"] for r in records} == {"COMPLETE"}
    assert [len(r["history"]["epoch"]) for r in records] == [20] * len(keys)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plan_only_then_two_workers_complete_each_key_once(backend, tmp_path):
    url = _storage(backend, tmp_path)
    study = f"plan-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(study, n_lr=6, epochs=2)))
    plan = subprocess.run(
        [sys.executable, "-m", "weightdecay.cli", "sweep", str(spec), "--plan-only",
         "--storage", url, "--out", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert plan.returncode == 0, plan.stderr
    assert "6 runs planned, 6 enqueued; none run here" in plan.stdout
    assert "weightdecay worker --storage " in plan.stdout and f"--study {study}" in plan.stdout
    trials = _trials(url, study)
    assert [t.state.name for t in trials] == ["WAITING"] * 6  # planned, not run
    assert not (tmp_path / "ckpt").exists()

    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_worker(url, study, tmp_path, log) for log in logs]
    _wait(procs, 240)
    assert [p.returncode for p in procs] == [0, 0], [log.read_text()[-2000:] for log in logs]
    counts = collections.Counter(_started(logs[0]) + _started(logs[1]))
    keys = sorted(t.user_attrs["key"] for t in trials)
    assert sorted(counts) == keys and set(counts.values()) == {1}, counts
    by_key = collections.Counter(t.user_attrs["key"] for t in _trials(url, study)
                                 if t.state.name == "COMPLETE")
    assert sorted(by_key) == keys and set(by_key.values()) == {1}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_stopped_by_sigterm_hands_its_trial_back_at_once(backend, tmp_path):
    """A scheduler's pre-emption (SIGTERM): one line, exit 143, and the trial is WAITING
    again at once -- no grace period to wait for, nothing FAILed."""
    url = _storage(backend, tmp_path)
    study = f"term-{uuid.uuid4().hex[:8]}"
    create_sweep(_spec(study, n_lr=1, epochs=30), url)
    log = tmp_path / "a.log"
    worker = _worker(url, study, tmp_path, log)
    deadline = time.monotonic() + 120
    while not any((tmp_path / "ckpt").glob("*.pt")):  # mid-trial: after epoch 1
        assert worker.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker never checkpointed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 143, log.read_text()[-2000:]
    text = log.read_text()
    assert text.strip().splitlines()[-1].startswith("weightdecay: interrupted by SIGTERM")
    assert "handed back" in text and "Traceback" not in text
    (trial,) = _trials(url, study)
    assert trial.state.name == "WAITING" and trial.user_attrs[store.WORKER_ATTR] is None

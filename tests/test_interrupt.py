"""Interrupted sweeps and late workers: nothing lost, nothing run twice, no process left.

SIGTERM / SIGINT to ``weightdecay sweep --workers N`` stop its workers, hand their trials
back (WAITING again, so a rerun starts at once) and exit with one line and 130 / 143; a
sweep killed outright (SIGKILL) leaves no worker behind either. A worker paused past its
grace period discards its late result with a log line. Workers are real processes; each
trial is a few epochs of an MLP on ``digits``."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from weightdecay import cli
from weightdecay.harness import store, train
from weightdecay.harness.interrupt import (
    Interrupted,
    check_interrupted,
    deferred_signals,
    stop_on_signals,
)
from weightdecay.harness.local import run_local, worker_log_path
from weightdecay.harness.study import claim_trial, create_sweep
from weightdecay.harness.worker import run_worker

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
PID = re.compile(r"worker \d+: pid (\d+)")


def spec(name: str, n_lr: int = 2, epochs: int = 15, batch_size: int = 64) -> dict:
    return {"name": name, "defaults": {"dataset": "digits", "model": "mlp",
                                       "batch_size": batch_size},
            "experiments": [{"name": "grid", "epochs": [epochs], "optimizers": [
                {"optimizer": "sgdw", "lr": [0.05 * 2**i for i in range(n_lr)],
                 "weight_decay": [0.0]}]}]}


def trials(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def started(log: Path) -> bool:
    return log.exists() and ": started" in log.read_text()


def each_key_complete_once(url: str, name: str, runs: int) -> None:
    by_key = collections.defaultdict(list)
    for t in trials(url, name):
        by_key[t.user_attrs["key"]].append(t.state.name)
    assert len(by_key) == runs  # nothing lost
    assert all(states == ["COMPLETE"] for states in by_key.values()), by_key  # one trial each


# ------------------------------------------------------------------------------ in process


def test_a_signal_hands_the_running_trial_back(tmp_path, monkeypatch):
    """SIGTERM in the middle of a trial (workers=0): Interrupted with exit code 143, and
    the trial is WAITING again -- the rerun runs it at once, and only once."""
    url = store.sqlite_url(tmp_path / "store.db")
    real = train.run

    def interrupted_run(*args, **kwargs):
        def on_epoch(epoch, metrics):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            kwargs["on_epoch"](epoch, metrics)
        return real(*args, **{**kwargs, "on_epoch": on_epoch})

    monkeypatch.setattr(train, "run", interrupted_run)
    with pytest.raises(Interrupted) as info:
        run_local(spec("inproc", n_lr=1, epochs=4), url, workers=0, out_dir=tmp_path,
                  progress=False, stream=open(os.devnull, "w"))  # noqa: SIM115
    assert info.value.exit_code == 143 and "handed back" in str(info.value)
    (trial,) = trials(url, "inproc")
    assert trial.state.name == "WAITING" and trial.user_attrs[store.WORKER_ATTR] is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone again
    monkeypatch.undo()
    records = run_local(spec("inproc", n_lr=1, epochs=4), url, workers=0, out_dir=tmp_path,
                        progress=False, stream=open(os.devnull, "w"))  # noqa: SIM115
    assert records[0]["history"]["epoch"] == [1, 2, 3, 4]  # resumed after epoch 2
    each_key_complete_once(url, "inproc", 1)


def test_a_signal_during_a_claim_is_held_until_the_claim_is_recorded(tmp_path, monkeypatch):
    url = store.sqlite_url(tmp_path / "store.db")
    create_sweep(spec("claim", n_lr=1), url)
    from weightdecay.harness import worker

    def claim_then_signal(*args):
        os.kill(os.getpid(), signal.SIGINT)  # arrives inside the claim
        return claim_trial(*args)

    monkeypatch.setattr(worker, "claim_trial", claim_then_signal)
    lines: list[str] = []
    with pytest.raises(Interrupted) as info:
        run_worker(url, "claim", out_dir=tmp_path, wait=False, log=lines.append)
    assert info.value.exit_code == 130
    (trial,) = trials(url, "claim")
    assert trial.state.name == "WAITING"  # claimed, then handed back: never left RUNNING
    assert any("handed back" in line for line in lines), lines


def test_deferred_signals_raise_once_at_the_end():
    with stop_on_signals():
        reached = False
        with pytest.raises(Interrupted), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # a second signal adds nothing
            time.sleep(0.01)
            reached = True
        assert reached
        os.kill(os.getpid(), signal.SIGTERM)  # already stopping: ignored
        time.sleep(0.01)


def test_a_swallowed_interruption_is_raised_again_at_the_next_safe_point():
    with stop_on_signals():
        try:  # e.g. a library's bare `except:` around the line the signal interrupted
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        except BaseException:  # noqa: S110
            pass
        with pytest.raises(Interrupted) as info:
            check_interrupted()
    assert info.value.exit_code == 143
    check_interrupted()  # outside stop_on_signals: nothing to raise


def test_an_interruption_swallowed_by_a_finaliser_leaves_no_traceback(monkeypatch):
    # Python prints an "Exception ignored in ... Traceback" for an exception raised in a
    # finaliser or a weakref callback (importlib's module-lock `cb` in a worker's log); ours
    # is raised again at the next safe point, so it is dropped -- and only it.
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    class Signalled:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)

    class Broken:
        def __del__(self):
            raise ValueError("a library's own bug")

    with stop_on_signals():
        Signalled()  # collected at once: the signal's exception is swallowed by Python
        Broken()
        with pytest.raises(Interrupted) as info:
            check_interrupted()
    assert info.value.exit_code == 143
    assert [type(u.exc_value) for u in seen] == [ValueError]  # passed on, not ours
    assert sys.unraisablehook == seen.append  # restored


def _take_over(url: str, claimed_number: int) -> None:
    """What another worker's fail_stale_trials does to a trial whose worker went silent."""
    study = optuna.load_study(study_name="late", storage=store.open_storage(url))
    storage = store.open_storage(url)
    study_id = storage.get_study_id_from_name("late")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, claimed_number)
    storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
    storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id))


@pytest.mark.parametrize("notices", ["after the run", "while it runs"])
def test_a_late_workers_result_is_discarded_with_a_log_line(tmp_path, monkeypatch, notices):
    url = store.sqlite_url(tmp_path / "store.db")
    create_sweep(spec("late", n_lr=1, epochs=2), url)
    real = train.run

    def paused_run(config, **kwargs):
        _take_over(url, 0)  # the worker was paused past the grace period ...
        if notices == "while it runs":
            time.sleep(1.5)  # ... and its heartbeat (1 s) sees it before the next epoch
        return real(config, **kwargs)

    monkeypatch.setattr(train, "run", paused_run)
    lines: list[str] = []
    result = run_worker(url, "late", out_dir=tmp_path, wait=False, heartbeat_interval=1,
                        grace_period=2, max_trials=1, log=lines.append)
    assert (result.ran, result.lost, result.completed, result.failed) == (1, 1, 0, 0)
    late = "stopped: another worker took it over" if notices == "while it runs" \
        else "result discarded"
    assert any(late in line for line in lines), lines
    first, retry = trials(url, "late")
    assert first.state.name == "FAIL" and "final_test_error" not in first.user_attrs
    assert retry.state.name == "WAITING" and store.WORKER_ATTR not in retry.user_attrs
    monkeypatch.undo()
    run_worker(url, "late", out_dir=tmp_path, wait=False, log=lines.append)
    (record,) = store.load_records(url, "late")
    assert record["state"] == "COMPLETE" and record["history"]["epoch"] == [1, 2]


# ------------------------------------------------------------------------------ processes


def sweep_command(spec_file: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "weightdecay.cli", "sweep", str(spec_file), "--workers",
            str(workers), "--no-progress", "--out", str(out)]


def start_sweep(tmp_path: Path, name: str, workers: int, **popen):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec(name, n_lr=workers, epochs=20, batch_size=256)))
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep_command(spec_file, out, workers), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **popen)
    logs = [worker_log_path(out, i) for i in range(workers)]
    try:
        wait_for(lambda: all(started(log) for log in logs), 90, "the workers to start")
    except AssertionError:
        proc.kill()
        raise
    pids = [int(PID.search(log.read_text()).group(1)) for log in logs]
    return proc, out, pids, spec_file


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_an_interrupted_sweep_stops_its_workers_and_a_rerun_starts_at_once(
        tmp_path, capsys, signum, workers):
    proc, out, pids, spec_file = start_sweep(tmp_path, "stop", workers,
                                             start_new_session=True)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: the whole foreground process group
    else:
        proc.send_signal(signum)  # `kill PID`: the sweep process alone
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"weightdecay: interrupted by {signal.Signals(signum).name}")
    assert "handed their running trials back" in lines[-1]
    assert "Traceback" not in err
    assert not [pid for pid in pids if alive(pid)]  # no orphaned worker
    url = store.sqlite_url(out / "store.db")
    states = [t.state.name for t in trials(url, "stop")]
    assert states == ["WAITING"] * workers, states  # handed back: not RUNNING, not FAIL
    for log in (worker_log_path(out, i) for i in range(workers)):
        assert "handed back" in log.read_text() and "Traceback" not in log.read_text()
    if signum == signal.SIGINT:
        return
    # the rerun (in this process, to save starting workers) finds nothing RUNNING to wait
    # for, and runs each trial once, from its checkpoint
    assert cli.main(sweep_command(spec_file, out, 0)[3:]) == 0
    assert "RUNNING in the store" not in capsys.readouterr().err
    each_key_complete_once(url, "stop", workers)


def test_a_killed_sweep_leaves_no_worker_behind(tmp_path):
    proc, out, pids, _ = start_sweep(tmp_path, "killed", 1)
    proc.kill()  # SIGKILL: the sweep cannot clean up; its worker notices and stops itself
    proc.communicate(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the orphaned worker to stop")
    url = store.sqlite_url(out / "store.db")
    assert [t.state.name for t in trials(url, "killed")] == ["WAITING"]
    assert "handed back" in worker_log_path(out, 0).read_text()


def pause_outside_a_transaction(proc: subprocess.Popen, db: Path) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite lock (a process paused inside a write
    holds the database lock, and SQLite then makes every other writer wait for it)."""
    import sqlite3

    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0.0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")  # no other lock of any kind is held
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked: let it finish its write, try again
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            conn.close()
    pytest.fail("the worker always held the database lock")


def test_a_worker_paused_past_its_grace_period_discards_its_result(tmp_path):
    """SIGSTOP a real worker mid-trial until another worker has taken its trial over and
    finished it; once resumed, it stops with a log line and exit 0: one COMPLETE trial per
    key, no traceback, no checkpoint left behind."""
    url = store.sqlite_url(tmp_path / "store.db")
    create_sweep(spec("late", n_lr=1, epochs=20, batch_size=256), url)
    log = tmp_path / "paused.log"
    with open(log, "w") as fh:
        paused = subprocess.Popen(
            [sys.executable, "-m", "weightdecay.cli", "worker", "--storage", url, "--study",
             "late", "--out", str(tmp_path), "--heartbeat-interval", "1", "--grace-period", "2",
             "--no-wait"], stdout=fh, stderr=subprocess.STDOUT, env=ENV)
    try:
        wait_for(lambda: any((tmp_path / "ckpt").glob("*.pt")), 90, "a checkpoint")
        pause_outside_a_transaction(paused, tmp_path / "store.db")
        time.sleep(3.5)  # > grace period (SQLite's clock has 1 s steps)
        rescued = run_worker(url, "late", out_dir=tmp_path, wait=False, heartbeat_interval=1,
                             grace_period=2, log=lambda _: None)
        assert (rescued.ran, rescued.completed) == (1, 1)
    finally:
        paused.send_signal(signal.SIGCONT)
    assert paused.wait(60) == 0, log.read_text()
    text = log.read_text()
    assert "another worker took it over" in text or "result discarded" in text, text
    assert "Traceback" not in text and "1 taken over by other workers" in text
    assert [t.state.name for t in trials(url, "late")] == ["FAIL", "COMPLETE"]
    assert list((tmp_path / "ckpt").iterdir()) == []

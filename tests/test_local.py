"""Local sweeps: spawned workers log to OUT/logs/worker-<i>.log, and a worker that fails is
reported with its error line and the path of its full log (not only an exit code)."""

from __future__ import annotations

import io

import torch

from weightdecay.harness import store
from weightdecay.harness.local import run_local, worker_log_path

torch.set_num_threads(1)

SPEC = {
    "name": "local",
    "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
    "experiments": [{"name": "grid", "epochs": [1], "optimizers": [
        {"optimizer": "sgdw", "lr": [0.05], "weight_decay": [0.0]}]}],
}


def test_spawned_workers_log_and_a_failing_worker_is_named(tmp_path):
    out = tmp_path / "out"
    url = store.sqlite_url(tmp_path / "store.db")
    out.mkdir()
    (out / "ckpt").write_text("a file where the checkpoint folder belongs")
    stream = io.StringIO()
    records = run_local(SPEC, url, workers=1, out_dir=out, progress=False, stream=stream)
    text = stream.getvalue()
    log = worker_log_path(out, 0)
    assert [r["state"] for r in records] == ["WAITING"]
    assert "worker 0 exited with code 1: FileExistsError" in text, text
    assert f"(full log: {log})" in text
    assert "Traceback" in log.read_text()  # the whole story is in the log

    (out / "ckpt").unlink()
    stream = io.StringIO()
    records = run_local(SPEC, url, workers=1, out_dir=out, progress=False, stream=stream)
    assert [r["state"] for r in records] == ["COMPLETE"]
    assert "exited with code" not in stream.getvalue()
    assert "test error" in log.read_text()  # one line per trial in the worker's log


def _extend_spec():
    return {"name": "ext", "defaults": {"dataset": "digits", "model": "mlp", "batch_size": 64},
            "experiments": [{"name": "grid", "figure": "fig2", "epochs": [1], "seeds": [0, 1],
                             "optimizers": [{"optimizer": "sgdw", "lr": [0.1],
                                             "weight_decay": [2.0**k for k in range(-10, 1)],
                                             "band": {"lr": 0.1, "weight_decay": 2.0**-1,
                                                      "slope": 0.0, "cells": 3,
                                                      "extend": 2}}]}]}


def test_a_band_with_extend_runs_rounds_until_its_rows_are_bracketed(tmp_path):
    """The runner's rounds (run, then plan with the outcomes): a band placed on decays so
    strong (up to the whole weight per update) that the smallest of its cells is best grows
    downwards, one value per round, up to ``extend``; a rerun adds nothing, runs nothing."""
    spec = _extend_spec()
    url = store.sqlite_url(tmp_path / "store.db")
    stream = io.StringIO()
    records = run_local(spec, url, workers=0, out_dir=tmp_path / "out", progress=False,
                        stream=stream)
    cells = sorted({r["weight_decay"] for r in records})
    assert cells == [2.0**k for k in range(-4, 1)], cells  # 3 cells + 2 added below
    assert all(r["state"] == "COMPLETE" for r in records) and len(records) == 5 * 2
    assert stream.getvalue().count("run(s) added to bracket") == 2
    stream = io.StringIO()
    again = run_local(spec, url, workers=0, out_dir=tmp_path / "out", progress=False,
                      stream=stream)
    assert len(again) == 10 and "added" not in stream.getvalue()
    assert "0 enqueued" in stream.getvalue()


def test_the_local_workers_take_the_bracketing_cells_without_being_started_again(tmp_path):
    """With worker processes, the cells that bracket an optimum go to the workers already
    running (one start, one log header, the same cells as the rounds in this process)."""
    url = store.sqlite_url(tmp_path / "store.db")
    stream = io.StringIO()
    records = run_local(_extend_spec(), url, workers=1, out_dir=tmp_path / "out",
                        progress=False, stream=stream)
    assert sorted({r["weight_decay"] for r in records}) == [2.0**k for k in range(-4, 1)]
    assert all(r["state"] == "COMPLETE" for r in records) and len(records) == 5 * 2
    text = stream.getvalue()
    assert text.count("run(s) added to bracket") == 2, text
    assert text.count("worker(s)") == 1, text  # one round of workers
    log = worker_log_path(tmp_path / "out", 0).read_text()
    assert log.count("worker 0: pid") == 1, log
    assert log.count(": test error") == 10, log


def test_a_planned_sweep_with_extend_enqueues_the_bracketing_cells_when_planned_again(tmp_path):
    """Remote workers: planning again, after they ran, enqueues the cells that bracket the
    optima; the command says so."""
    from weightdecay import api
    from weightdecay.harness.worker import run_worker

    out = tmp_path / "out"
    first = api.sweep(_extend_spec(), out=out, plan_only=True)
    assert first.enqueued == 6 and "run this command again" in first.bracket_note()
    url = first.storage
    for _ in range(3):
        run_worker(url, "ext", out_dir=out, wait=False, log=lambda _line: None)
        again = api.sweep(_extend_spec(), out=out, plan_only=True)
        if again.enqueued == 0:
            break
    assert sorted({r["weight_decay"] for r in store.load_records(url, "ext")}) == \
        [2.0**k for k in range(-4, 1)]
    assert api.sweep({**_extend_spec(), "name": "plain", "experiments": [
        {**_extend_spec()["experiments"][0], "optimizers": [
            {"optimizer": "sgdw", "lr": [0.1], "weight_decay": [0.0]}]}]},
        out=tmp_path / "plain", plan_only=True).bracket_note() == ""

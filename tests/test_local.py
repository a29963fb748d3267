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

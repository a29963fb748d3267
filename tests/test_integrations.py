"""The integration examples, run as a user runs them: PyTorch Lightning, the Hugging Face
Trainer and optuna-dashboard (examples/*.py; requirements-integrations.txt).

Each example checks itself and exits 1 on a mismatch: Lightning and the HF Trainer compare
eta_t = lr/initial_lr and the decay really applied with the closed-form warm-restart
schedule at every update, across a checkpoint save and a resume by the trainer;
optuna-dashboard lists a real sweep store's trials with the stored values, parameters and
user attributes. Without the packages the tests are skipped, unless
``WEIGHTDECAY_REQUIRE_OPTIONAL=1`` (set by .ci/run), where a missing package fails.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _optional import need as _need

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
need = functools.partial(
    _need, install="pip install -r requirements-integrations.txt -c requirements.txt")


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=EXAMPLES.parent)


def assert_follows_schedule(proc: subprocess.CompletedProcess, updates: int, split: int):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith(f"{updates} updates, restarts at t = [6, 18]: eta_t and the "
                                "decay follow the schedule at every update"), lines[-1]
    rows = [line.split() for line in lines if re.match(r"\s*\d+ +\d\.\d{6} ", line)]
    assert [int(r[0]) for r in rows] == list(range(updates))
    resumed = next(r for r in rows if "resumed" in " ".join(r))
    assert int(resumed[0]) == split and float(resumed[1]) < 1.0  # mid-period, restored


@pytest.mark.slow
def test_lightning_step_interval_follows_the_schedule_across_resume():
    need("lightning")
    assert_follows_schedule(run_example("lightning_restarts.py"), updates=24, split=11)


@pytest.mark.slow
def test_lightning_epoch_interval_is_the_pitfall():
    """Lightning's default interval ("epoch") holds eta_t through each epoch: caught."""
    need("lightning")
    proc = run_example("lightning_restarts.py", "--interval", "epoch")
    assert proc.returncode == 1
    assert "MISMATCH t=1: eta 1.000000" in proc.stderr


@pytest.mark.slow
def test_hf_trainer_follows_the_schedule_across_resume():
    need("transformers", "accelerate")
    assert_follows_schedule(run_example("hf_trainer_restarts.py"), updates=20, split=9)


@pytest.mark.slow
def test_optuna_dashboard_lists_the_stored_trials():
    need("optuna_dashboard")
    proc = run_example("optuna_dashboard_store.py")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "optuna-dashboard lists 2 trials with the stored states, values, parameters and " \
           "user attributes" in out
    for attr in ("config", "key", "final_test_error", "history", "experiment", "figure"):
        assert attr in out.splitlines()[-2]

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


# ------------------------------------------------- the EquilibriumMonitor's callbacks
def _monitor_steps(records):
    return sorted({r["step"] for r in records})


@pytest.mark.slow
def test_lightning_equilibrium_callback_records_and_resumes(tmp_path):
    """EquilibriumCallback: records every k updates of a Lightning fit (Lightning steps the
    optimizer with a closure), the probe's scale-invariant convs, and a fit resumed from a
    checkpoint continues the records (a new callback object, as in a new process)."""
    need("lightning")
    import logging

    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import weightdecay as wd
    from weightdecay.diagnostics.lightning import EquilibriumCallback
    from weightdecay.harness.models import build_model

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build_model("cnn1d_bn", input_shape=(1, 40), num_classes=4, channels=8)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return wd.AdamW(self.parameters(), lr=1e-2, weight_decay=0.05)

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 40, generator=gen), torch.randint(0, 4, (64,), generator=gen)
    data = DataLoader(TensorDataset(x, y), batch_size=16)  # 4 updates per epoch

    def trainer(steps):
        return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)

    L.seed_everything(0, verbose=False)
    first = EquilibriumCallback(every=4, example_input=x[:16])
    t1 = trainer(8)
    t1.callbacks.append(first)
    t1.fit(Net(), data)
    assert _monitor_steps(first.records()) == [4, 8]
    invariant = {r["name"] for r in first.records() if r["scale_invariant"]}
    assert invariant == {"net.features.0.weight", "net.features.3.weight",
                         "net.features.6.weight"}
    head = next(r for r in first.records() if r["name"] == "net.head.weight")
    assert head["category"] == "other" and head["predicted_angular_update"] is not None
    assert head["timescale_epochs"] == pytest.approx(head["timescale_updates"] / 4)
    assert first.monitor is not None and not first.monitor._handles  # removed at the end
    ckpt = tmp_path / "split.ckpt"
    t1.save_checkpoint(ckpt)

    second = EquilibriumCallback(every=4, example_input=x[:16])
    t2 = trainer(16)
    t2.callbacks.append(second)
    t2.fit(Net(), data, ckpt_path=ckpt)
    records = second.records()
    assert _monitor_steps(records) == [4, 8, 12, 16]
    assert records[:len(first.records())] == first.records()


@pytest.mark.slow
def test_hf_equilibrium_callback_records_and_resumes(tmp_path):
    """EquilibriumTrainerCallback: records every k optimizer updates of Trainer.train() (with
    gradient accumulation, the optimizer inside Accelerate's wrapper); resumed with
    restore_callback_states_from_checkpoint=True, the records continue."""
    need("transformers", "accelerate")
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_example",
                                                  EXAMPLES / "hf_trainer_restarts.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # its tiny BERT and random tokens
    from transformers import Trainer, TrainingArguments

    import weightdecay as wd
    from weightdecay.diagnostics.huggingface import EquilibriumTrainerCallback

    def make(max_steps, callback):
        model = example.tiny_model()
        opt = wd.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        args = TrainingArguments(
            output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=4,
            gradient_accumulation_steps=2, save_strategy="steps", save_steps=6,
            logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
            dataloader_num_workers=0, restore_callback_states_from_checkpoint=True)
        return Trainer(model=model, args=args, train_dataset=example.RandomTokens(),
                       optimizers=(opt, None), callbacks=[callback])

    first = EquilibriumTrainerCallback(every=2)
    make(6, first).train()
    records = first.records()
    assert _monitor_steps(records) == [2, 4, 6]
    assert {r["optimizer"] for r in records} == {"AdamW"}
    assert all(r["predicted_angular_update"] is not None for r in records
               if r["decay_per_update"])

    trainer = make(10, EquilibriumTrainerCallback(every=2))
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-6"))
    resumed = EquilibriumTrainerCallback.find(trainer).records()
    assert _monitor_steps(resumed) == [2, 4, 6, 8, 10]
    assert resumed[:len(records)] == records

"""AdamW with warm restarts (AdamWR) inside PyTorch Lightning, checked update by update.

``configure_optimizers`` returns ``wd.AdamW`` and the library's closed-form warm-restart
schedule as a torch LR scheduler stepped once per UPDATE (``"interval": "step"``; Lightning's
default ``"epoch"`` would hold eta_t constant through each epoch and count T_0 in epochs).

The library reads the schedule multiplier as ``eta_t = group["lr"] / group["initial_lr"]`` and
decays by ``eta_t * lambda`` (Loshchilov & Hutter, ICLR 2019, Algorithm 2). To show the
decay that is really applied, the model carries a *probe*: a float64 parameter whose
gradient is exactly zero (it enters the loss as ``0 * probe.sum()``), so AdamW's update of it
is the decay alone, ``probe_t = (1 - eta_t * lambda) * probe_{t-1}``. Every update records
the trainer's own update count, eta_t and ``1 - probe_t / probe_{t-1}``.

The run stops after ``--split`` updates, the Trainer writes a checkpoint, and a new Trainer
resumes from it (``fit(ckpt_path=...)``) to ``--steps``: the check below compares every
update of both halves with the closed-form schedule.

    python examples/lightning_restarts.py            # prints a table, exits 1 on a mismatch
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import weightdecay as wd

LR, LAMBDA = 1e-2, 0.05          # alpha and the paper's lambda (decay = eta_t * lambda)
T_0, T_MULT = 6, 2               # restart periods of 6, 12, 24, ... UPDATES


def schedule() -> wd.schedules.Schedule:
    return wd.schedules.cosine_restarts(T_0=T_0, T_mult=T_MULT)


class TinyRegression(L.LightningModule):
    """A linear model on random data, plus the zero-gradient decay probe."""

    def __init__(self, interval: str = "step") -> None:
        super().__init__()
        self.interval = interval
        self.net = nn.Linear(8, 1)
        self.probe = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.records: list[dict] = []
        self._before: dict | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        return loss + 0.0 * self.probe.sum()  # the probe's gradient is exactly 0

    def configure_optimizers(self):
        opt = wd.AdamW(self.parameters(), lr=LR, weight_decay=LAMBDA)
        sched = wd.schedules.as_torch_scheduler(opt, schedule())
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": self.interval, "frequency": 1}}

    # -- recording: before and after each optimizer.step() --------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        group = optimizer.param_groups[0]
        self._before = {"t": self.trainer.global_step, "lr": float(group["lr"]),
                        "eta": float(group["lr"]) / group["initial_lr"],
                        "probe": self.probe.detach()[0].item()}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._before is None:
            return
        after = self.probe.detach()[0].item()
        self.records.append({**self._before, "decay": 1.0 - after / self._before["probe"]})
        self._before = None


def data(n: int = 64, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(root: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=root)


def train(steps: int, split: int, root: Path, interval: str = "step") -> list[dict]:
    """Train ``split`` updates, save a checkpoint, resume in a new Trainer to ``steps``."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners
    L.seed_everything(0, verbose=False)
    first = TinyRegression(interval)
    t1 = trainer(root, split)
    t1.fit(first, data())
    ckpt = root / "split.ckpt"
    t1.save_checkpoint(ckpt)

    second = TinyRegression(interval)  # fresh objects, as in a new process
    t2 = trainer(root, steps)
    t2.fit(second, data(), ckpt_path=ckpt)
    return first.records + second.records


def check(records: list[dict], steps: int) -> list[str]:
    """Mismatches between the records and the closed-form schedule (empty: all good)."""
    sched, errors = schedule(), []
    if [r["t"] for r in records] != list(range(steps)):
        errors.append(f"update counts {[r['t'] for r in records]} != 0..{steps - 1}")
    for r in records:
        eta = sched(r["t"])
        if abs(r["eta"] - eta) > 1e-12 or abs(r["lr"] - LR * eta) > 1e-12:
            errors.append(f"t={r['t']}: eta {r['eta']:.6f}, lr {r['lr']:.6g}; "
                          f"schedule eta {eta:.6f}")
        if abs(r["decay"] - eta * LAMBDA) > 1e-12:
            errors.append(f"t={r['t']}: decay {r['decay']:.3e} != eta_t*lambda "
                          f"{eta * LAMBDA:.3e}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="updates in all")
    parser.add_argument("--split", type=int, default=11, help="updates before the checkpoint")
    parser.add_argument("--interval", choices=("step", "epoch"), default="step",
                        help="when Lightning steps the scheduler ('epoch' shows the pitfall)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        records = train(args.steps, args.split, Path(root), args.interval)
    sched = schedule()
    print(f"{'t':>3} {'eta_t':>9} {'schedule':>9} {'decay':>11} {'eta_t*lambda':>12}")
    for r in records:
        mark = "  <- resumed from the checkpoint" if r["t"] == args.split else ""
        print(f"{r['t']:3d} {r['eta']:9.6f} {sched(r['t']):9.6f} {r['decay']:11.4e} "
              f"{sched(r['t']) * LAMBDA:12.4e}{mark}")
    errors = check(records, args.steps)
    for line in errors:
        print("MISMATCH", line, file=sys.stderr)
    print(f"{len(records)} updates, restarts at t = "
          f"{[int(t) for t in sched.period_ends(args.steps)]}: "
          + ("eta_t and the decay follow the schedule at every update" if not errors
             else f"{len(errors)} mismatches"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

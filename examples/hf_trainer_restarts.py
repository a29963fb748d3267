"""AdamW with warm restarts in the Hugging Face ``Trainer``, checked update by update.

``Trainer(optimizers=(opt, sched))`` takes the library's ``wd.AdamW`` and the closed-form
warm-restart schedule as a torch LR scheduler. The Trainer steps the scheduler once per
optimizer UPDATE (after ``gradient_accumulation_steps`` batches), so ``T_0`` counts updates.
The model is a tiny BERT classifier initialised at random from a config (no download;
``HF_HUB_OFFLINE=1``) on random tokens.

The library reads ``eta_t = group["lr"] / group["initial_lr"]`` and decays by
``eta_t * lambda`` (Loshchilov & Hutter, ICLR 2019, Algorithm 2). A float64 *probe*
parameter with an exactly-zero gradient shows the decay really applied: AdamW moves it by
the decay alone, ``probe_t = (1 - eta_t * lambda) * probe_{t-1}``. A callback records the
Trainer's update count, eta_t and ``1 - probe_t / probe_{t-1}`` at every update.

The first Trainer stops after ``--split`` updates and saves a checkpoint; a second one
resumes from it (``train(resume_from_checkpoint=...)``) to ``--steps``; every update of both
halves is compared with the closed-form schedule.

    python examples/hf_trainer_restarts.py           # prints a table, exits 1 on a mismatch
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import weightdecay as wd  # noqa: E402

LR, LAMBDA = 1e-3, 0.05          # alpha and the paper's lambda (decay = eta_t * lambda)
T_0, T_MULT = 6, 2               # restart periods of 6, 12, 24, ... UPDATES
BATCH, ACCUMULATE = 4, 2         # one update = 2 batches of 4


def schedule() -> wd.schedules.Schedule:
    return wd.schedules.cosine_restarts(T_0=T_0, T_mult=T_MULT)


def tiny_model() -> BertForSequenceClassification:
    """A 2-layer BERT with 32-dim states, random weights, plus the decay probe."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    model.register_parameter("wd_probe", nn.Parameter(torch.ones(4, dtype=torch.float64)))
    return model


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, length: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, length), generator=g)
        self.labels = (self.ids.sum(1) % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


class RecordDecay(TrainerCallback):
    """At every update: the Trainer's update count, eta_t, lr_t and the decay applied."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.records: list[dict] = []
        self._before: dict | None = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        probe = self.model.wd_probe
        probe.grad = torch.zeros_like(probe)  # not in the forward pass: a zero gradient
        group = self.optimizer.param_groups[0]
        self._before = {"t": state.global_step, "lr": float(group["lr"]),
                        "eta": float(group["lr"]) / group["initial_lr"],
                        "probe": probe.detach()[0].item()}

    def on_optimizer_step(self, args, state, control, **kwargs):
        after = self.model.wd_probe.detach()[0].item()
        self.records.append({**self._before, "decay": 1.0 - after / self._before["probe"]})


def make_trainer(root: Path, max_steps: int, save_steps: int) -> tuple[Trainer, RecordDecay]:
    model = tiny_model()
    opt = wd.AdamW(model.parameters(), lr=LR, weight_decay=LAMBDA)
    sched = wd.schedules.as_torch_scheduler(opt, schedule())  # stepped per update by Trainer
    recorder = RecordDecay(model, opt)
    args = TrainingArguments(
        output_dir=str(root), max_steps=max_steps, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATE, save_strategy="steps", save_steps=save_steps,
        logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(),
                      optimizers=(opt, sched), callbacks=[recorder])
    return trainer, recorder


def train(steps: int, split: int, root: Path) -> list[dict]:
    """Train ``split`` updates (checkpoint saved), then resume in a new Trainer to ``steps``."""
    first, rec1 = make_trainer(root, max_steps=split, save_steps=split)
    first.train()
    second, rec2 = make_trainer(root, max_steps=steps, save_steps=steps)
    second.train(resume_from_checkpoint=str(root / f"checkpoint-{split}"))
    return rec1.records + rec2.records


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
    parser.add_argument("--steps", type=int, default=20, help="updates in all")
    parser.add_argument("--split", type=int, default=9, help="updates before the checkpoint")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        records = train(args.steps, args.split, Path(root))
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

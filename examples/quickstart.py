"""Train a small 1-D CNN on MNIST-1D with AdamW and warm restarts — the library, no harness.

    python examples/quickstart.py [--epochs 30]

MNIST-1D is generated offline by the `mnist1d` package (4000 train / 1000 test signals).
"""

from __future__ import annotations

import argparse
import math

import torch

import weightdecay as wd
from weightdecay.harness.data import load_dataset
from weightdecay.harness.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=4e-3, help="base learning rate alpha")
    ap.add_argument("--lambda-norm", type=float, default=0.05, help="normalized weight decay")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    data = load_dataset("mnist1d")
    model = build_model("cnn1d_bn", data)
    steps_per_epoch = math.ceil(data.num_train / args.batch_size)

    # AdamW: the decay is eta_t * lambda (not multiplied by alpha); the paper decays all weights.
    # The group's lambda comes from its "lambda_norm" via NormalizedDecay below.
    opt = wd.AdamW([{"params": model.parameters(), "lambda_norm": args.lambda_norm}],
                   lr=args.lr)
    # AdamWR: cosine annealing with warm restarts, T_0 = 10% of the budget, T_mult = 2
    schedule = wd.schedules.cosine_restarts(T_0=max(1, args.epochs // 10) * steps_per_epoch,
                                            T_mult=2)
    lr_sched = wd.schedules.as_torch_scheduler(opt, schedule)
    # normalized decay: lambda = lambda_norm * sqrt(b / (B * T_i)), recomputed at each restart
    decay = wd.NormalizedDecay(opt, args.lambda_norm, args.batch_size, data.num_train,
                               schedule=schedule)
    ends = {math.ceil(e) for e in schedule.period_ends(args.epochs * steps_per_epoch)}

    gen = torch.Generator().manual_seed(0)
    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in data.batches(args.batch_size, shuffle=True, generator=gen):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            lr_sched.step()
            decay.step()
            step += 1
        model.eval()
        with torch.no_grad():
            err = (model(data.x_test).argmax(1) != data.y_test).float().mean().item()
        mark = "  <- end of a restart period (a good checkpoint)" if step in ends else ""
        print(f"epoch {epoch:3d}  loss {loss.item():.4f}  test error {err:6.2%}  "
              f"eta {schedule(step - 1):.3f}  "
              f"lambda {opt.param_groups[0]['weight_decay']:.2e}{mark}")


if __name__ == "__main__":
    main()

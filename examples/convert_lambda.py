"""Moving a weight decay from torch.optim.AdamW to weightdecay.AdamW, and back.

torch multiplies its ``weight_decay`` by the learning rate lr_t = alpha * eta_t; the paper's
lambda is multiplied by eta_t only (Loshchilov & Hutter, ICLR 2019, Algorithm 2). So at
base learning rate alpha: lambda = torch_wd * alpha, torch_wd = lambda / alpha. This script
converts both ways, trains the same model with both optimizers under a cosine schedule
(float64) to show the trajectories agree, shows what a change of alpha does to each, and
prints the EMA timescale. Every number it prints is computed, and it asserts what it claims.

    python examples/convert_lambda.py
"""

from __future__ import annotations

import torch

import weightdecay as wd

ALPHA, TORCH_WD = 1e-3, 0.01        # torch.optim.AdamW's defaults: lr=1e-3, weight_decay=1e-2
UPDATES, BATCH, DATASET = 200, 128, 50_000


def train(make_optimizer) -> torch.Tensor:
    """200 AdamW updates of a small linear model under cosine annealing; final weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4).double()
    x, y = torch.randn(256, 16, dtype=torch.float64), torch.randn(256, 4, dtype=torch.float64)
    opt = make_optimizer(model.parameters())
    sched = wd.schedules.as_torch_scheduler(opt, wd.schedules.cosine(UPDATES))
    for t in range(UPDATES):
        batch = slice(t % 4 * 64, t % 4 * 64 + 64)
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def decay_of_one_update(make_optimizer) -> float:
    """The decay one update applies, measured: with a zero gradient AdamW moves theta by
    the decay alone, theta_1 = (1 - d) * theta_0."""
    p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    p.grad = torch.zeros_like(p)
    make_optimizer([p]).step()
    return 1.0 - p.item()


def main() -> None:
    # 1. torch -> this library
    lam = wd.paper_weight_decay(TORCH_WD, ALPHA)
    print(f"torch.optim.AdamW(lr={ALPHA:g}, weight_decay={TORCH_WD:g})")
    print(f"  -> wd.AdamW(lr={ALPHA:g}, weight_decay={lam:g})   "
          f"# wd.paper_weight_decay({TORCH_WD:g}, {ALPHA:g})")
    theirs = train(lambda p: torch.optim.AdamW(p, lr=ALPHA, weight_decay=TORCH_WD))
    ours = train(lambda p: wd.AdamW(p, lr=ALPHA, weight_decay=lam))
    diff = (theirs - ours).abs().max().item()
    assert diff < 1e-12, diff
    print(f"  {UPDATES} updates under cosine annealing, float64: "
          f"max |theta_torch - theta_wd| = {diff:.1e}")

    # 2. this library -> torch
    lam_back = 1e-4  # 0.01 % of every weight per update at eta_t = 1
    torch_wd = wd.torch_weight_decay(lam_back, ALPHA)
    print(f"wd.AdamW(lr={ALPHA:g}, weight_decay={lam_back:g})")
    print(f"  -> torch.optim.AdamW(lr={ALPHA:g}, weight_decay={torch_wd:g})   "
          f"# wd.torch_weight_decay({lam_back:g}, {ALPHA:g})")
    assert abs(wd.paper_weight_decay(torch_wd, ALPHA) - lam_back) < 1e-15

    # 3. why it matters: double alpha, keep the decay setting (decay of one update, measured)
    print(f"alpha {ALPHA:g} -> {2 * ALPHA:g}, same decay setting; decay applied by one update:")
    d_torch = [decay_of_one_update(lambda p, a=a: torch.optim.AdamW(p, lr=a,
                                                                    weight_decay=TORCH_WD))
               for a in (ALPHA, 2 * ALPHA)]
    d_ours = [decay_of_one_update(lambda p, a=a: wd.AdamW(p, lr=a, weight_decay=lam))
              for a in (ALPHA, 2 * ALPHA)]
    assert abs(d_torch[1] / d_torch[0] - 2) < 1e-9 and abs(d_ours[1] / d_ours[0] - 1) < 1e-9
    print(f"  torch.optim.AdamW(weight_decay={TORCH_WD:g}): {d_torch[0]:.3g} -> "
          f"{d_torch[1]:.3g}  (lr_t*wd: doubles with alpha)")
    print(f"  wd.AdamW(weight_decay={lam:g}):           {d_ours[0]:.3g} -> {d_ours[1]:.3g}  "
          "(eta_t*lambda: independent of alpha)")

    # 4. the same decay as an EMA timescale (Wang & Aitchison, arXiv 2405.13698)
    tau = wd.ema_timescale(ALPHA, TORCH_WD, BATCH, DATASET)
    print(f"wd.ema_timescale(lr={ALPHA:g}, weight_decay={TORCH_WD:g}, batch_size={BATCH}, "
          f"dataset_size={DATASET})  # torch's convention, decay_convention='lr':")
    print(f"  tau_iter = 1/(lr*weight_decay) = {tau.tau_iter:,.0f} updates, "
          f"tau_epoch = tau_iter*b/B = {tau.tau_epoch:.1f} epochs")
    back = wd.weight_decay_for_timescale(tau.tau_epoch, ALPHA, BATCH, DATASET)
    assert abs(back - TORCH_WD) < 1e-12


if __name__ == "__main__":
    main()

"""Analyse the mechanism pilot: what each candidate design would have decided, on pilot seeds.

    python experiments/analyze_mechanism_pilot.py runs/pilot_mechanism [--study
        pilot_mechanism] [--out docs/results/pilot_mechanism.json] [--n-boot 2000]

The pilot (experiments/pilot_mechanism.toml, seeds 1000 and 1001) runs wide grids. A
candidate design of the ``mechanism`` preset is a *sub-design* of it (fewer learning rates,
one decay value, a narrower λ window); for each, the script scores the mechanism claims
(:func:`weightdecay.report.mechanism.mechanism_claims`, the preset's own rules and
bootstrap) and counts its runs, so that the preset's design is chosen on seeds its reported
results never use (docs/experiment-design.md, "The mechanism preset"). It also prints each
monitored setting's window (:func:`weightdecay.report.mechanism.mechanism_table`) and the
heat maps' row optima, and measures the CPU time of one run of each kind (one thread, as a
sweep's workers run), which the preset's budget test multiplies by its run count.

Writes a JSON file and, beside it, the same numbers as markdown (``.md``), which
docs/experiment-design.md includes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from weightdecay._io import write_atomic
from weightdecay.harness.store import load_records, sqlite_url
from weightdecay.report.claims import Evidence
from weightdecay.report.mechanism import (
    SUBSETS,
    TAG_SUBSETS,
    markdown,
    mechanism_claims,
    mechanism_table,
)
from weightdecay.report.stats import format_value

P = 2.0

Select = Callable[[Mapping], bool]


def _lrs(lo: int, hi: int) -> set[float]:
    return {P**k for k in range(lo, hi + 1)}


def _eq(adamw: tuple[int, int], sgdw: tuple[int, int],
        lam: Mapping[tuple[str, str], tuple[float, ...]]) -> Select:
    """Constant-schedule monitored runs: AdamW/SGDW over the given alpha exponents, the
    given lambdas per (optimizer, convention)."""
    def keep(r: Mapping) -> bool:
        if r["experiment"] != "equilibrium":
            return True
        span = adamw if r["optimizer"] == "adamw" else sgdw
        return (P**span[0] <= float(r["lr"]) <= P**span[1]
                and float(r["weight_decay"]) in lam[(r["optimizer"], r["decay_convention"])])
    return keep


def _grad(lrs: tuple[int, int], lam: tuple[int, ...]) -> Select:
    """Cosine monitored runs (claim d): AdamW over ``lrs`` with the paper's lambda 2**k (k in
    ``lam``) and the corrected convention's matched lambda 2**k / alpha (the same decay at
    eta = 1)."""
    def keep(r: Mapping) -> bool:
        if r["experiment"] != "gradnorm":
            return True
        lr = float(r["lr"])
        if not P**lrs[0] <= lr <= P**lrs[1]:
            return False
        wd = float(r["weight_decay"]) * (lr if r["decay_convention"] == "corrected" else 1.0)
        return any(wd == P**k for k in lam)
    return keep


def _subsets(lrs: tuple[int, int], windows: Mapping[str, tuple[int, int]]) -> Select:
    """Decay-subset runs over alpha exponents ``lrs``, each subset's lambda exponents in
    ``windows``."""
    def keep(r: Mapping) -> bool:
        if r["figure"] != TAG_SUBSETS:
            return True
        if not P**lrs[0] <= float(r["lr"]) <= P**lrs[1]:
            return False
        name = next(n for n, m in SUBSETS.items() if all(r.get(k) == v for k, v in m.items()))
        lo, hi = windows[name]
        return P**lo <= float(r["weight_decay"]) <= P**hi
    return keep


def _all(r: Mapping) -> bool:
    return True


WIDE = {"all": (-12, -3), "scale_invariant": (-12, -3), "not_scale_invariant": (-12, 1)}
CHOSEN = {"all": (-12, -3), "scale_invariant": (-12, -3), "not_scale_invariant": (-11, -2)}
#: the per-optimizer decay of the chosen equilibrium design: every setting's d in [2^-7, 2^-5]
#: (3 timescales before the end of a 10-epoch constant run, first order in d)
EQ_LAMBDA = {("adamw", "schedule"): (P**-7, P**-5), ("adamw", "lr"): (P**-2,),
             ("sgdw", "schedule"): (P**-7, P**-5), ("sgdw", "lr"): (P**-4,)}
EQ_WIDE = {("adamw", "schedule"): (P**-7, P**-5), ("adamw", "lr"): (P**-2, P**0),
           ("sgdw", "schedule"): (P**-7, P**-5), ("sgdw", "lr"): (P**-6, P**-4)}
#: candidate designs, each a filter of the pilot's runs (every filter must keep a run)
DESIGNS: dict[str, list[Select]] = {
    "pilot: every run (64x in alpha)": [_all],
    "chosen: equilibrium d in [2^-7, 2^-5] (alpha 4x); gradnorm alpha 2^-6..2^-4; "
    "subsets alpha 2^-8..2^-3 (32x)": [
        _eq((-5, -3), (-3, -1), EQ_LAMBDA), _grad((-6, -4), (-7, -5)),
        _subsets((-8, -3), CHOSEN)],
    "equilibrium alpha 16x (AdamW 2^-6..2^-2, SGDW 2^-3..2^1)": [
        _eq((-6, -2), (-3, 1), EQ_WIDE)],
    "equilibrium alpha 64x, paper lambda 2^-7 only": [
        _eq((-8, -2), (-5, 1), {**EQ_WIDE, ("adamw", "schedule"): (P**-7,),
                                ("sgdw", "schedule"): (P**-7,)})],
    "subsets alpha 2^-8..2^-4 (16x)": [_subsets((-8, -4), WIDE)],
    "subsets alpha 2^-7..2^-2 (32x)": [_subsets((-7, -2), WIDE)],
}


def claims_of(records: list[Mapping], n_boot: int) -> list[dict]:
    ev = Evidence(records, n_boot=n_boot)
    return [{"key": c.key, "estimate": c.estimate_text(), "verdict": c.verdict,
             "reading": c.reading} for c in mechanism_claims(ev)]


def row_optima(records: list[Mapping], n_boot: int) -> dict[str, dict]:
    """Per subset: each learning rate's best lambda (data) and the slope."""
    ev = Evidence(records, n_boot=n_boot)
    out = {}
    for name, match in SUBSETS.items():
        hm = ev.heat_map(TAG_SUBSETS, optimizer="adamw", **match)
        fit = ev.slope(TAG_SUBSETS, optimizer="adamw", **match)
        if hm is None or fit is None:
            continue
        best = [None if not np.isfinite(v) else format_value(float(np.exp(v)))
                for v in fit.log_lambda[0]]
        out[name] = {"rows": [format_value(float(a)) for a in hm.rows], "best_lambda": best,
                     "edge": fit.edge.tolist(), "best_error": float(np.nanmin(hm.mean)),
                     "slope": fit.slope.format(), "reading": fit.reading}
    return out


def cost(seed: int = 1000) -> dict:
    """CPU seconds of one run of each kind (one thread, the data set loaded first)."""
    import torch

    from weightdecay.harness.build import get_dataset
    from weightdecay.harness.config import RunConfig
    from weightdecay.harness.train import run

    torch.set_num_threads(1)
    base = dict(dataset="mnist1d", model="cnn1d_bn", batch_size=128, test_size=10_000,
                eval_every=10, epochs=10, seed=seed, optimizer="adamw", lr=P**-5)
    get_dataset("mnist1d", "cpu", 10_000)
    kinds = {"monitored, constant schedule": dict(schedule="fixed", weight_decay=P**-7,
                                                  monitor_every=8),
             "monitored, cosine": dict(schedule="cosine", weight_decay=P**-7,
                                       monitor_every=8),
             "decay subset, cosine": dict(schedule="cosine", weight_decay=P**-7,
                                          decay_subset="not_scale_invariant")}
    run(RunConfig(**base, schedule="fixed", weight_decay=P**-7))  # warm-up
    out = {}
    for name, kw in kinds.items():
        t = time.process_time()
        run(RunConfig(**base, **kw))
        out[name] = round(time.process_time() - t, 2)
    return {"cpu_seconds": out, "cpu_seconds_per_run": max(out.values()),
            "note": "one 10-epoch run of each kind, one thread, time.process_time; the "
                    "largest is the budget's per-run cost"}


def to_markdown(result: dict) -> str:
    designs = result["designs"]
    lines = [f"Pilot `{result['study']}`: {result['runs']} runs, seeds "
             f"{', '.join(map(str, result['seeds']))}; {result['n_boot']} bootstrap "
             "replicates (S−1 seed draws each). Designs (sub-designs of the pilot):", ""]
    lines += [f"{i + 1}. {d['name']} ({d['runs']} runs)" for i, d in enumerate(designs)]
    lines += ["", "| claim | " + " | ".join(f"design {i + 1}" for i in range(len(designs)))
              + " |", "|---|" + "---|" * len(designs)]
    for k, key in enumerate(result["keys"]):
        cells = []
        for d in designs:
            c = d["claims"][k]
            cells.append("—" if c["verdict"] == "not run"
                         else f"{c['estimate']} **{c['verdict']}**")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += ["", "Monitored settings (all pilot runs):", "", result["table"], "",
              "Decay subsets, best λ of each α (data; `None`: at the grid's edge or outside "
              "the basin):", ""]
    for name, o in result["optima"].items():
        pairs = ", ".join(f"{a}: {b}" for a, b in zip(o["rows"], o["best_lambda"]))
        lines.append(f"- **{name}** (best error {100 * o['best_error']:.2f} %, slope "
                     f"{o['slope']}, {o['reading']}): {pairs}")
    c = result["cost"]
    lines += ["", "CPU seconds per 10-epoch run (one thread): " + ", ".join(
        f"{k} {v:.2f}" for k, v in c["cpu_seconds"].items()) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--study", default="pilot_mechanism")
    ap.add_argument("--out", type=Path, default=Path("docs/results/pilot_mechanism.json"))
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    records = [r for r in load_records(sqlite_url(args.run / "store.db"), args.study)
               if r.get("state") == "COMPLETE"]
    designs = []
    for name, filters in DESIGNS.items():
        recs = [r for r in records if all(f(r) for f in filters)]
        designs.append({"name": name, "runs": len(recs), "claims": claims_of(recs, args.n_boot)})
    result = {
        "study": args.study, "runs": len(records),
        "seeds": sorted({int(r["seed"]) for r in records}), "n_boot": args.n_boot,
        "keys": [c["key"] for c in designs[0]["claims"]], "designs": designs,
        "table": markdown(mechanism_table(Evidence(records, n_boot=args.n_boot))),
        "optima": row_optima(records, args.n_boot),
        "cost": cost(),
        "wall_seconds_median": statistics.median(float(r["wall_seconds"]) for r in records),
    }
    write_atomic(args.out, json.dumps(result, indent=1) + "\n")
    write_atomic(args.out.with_suffix(".md"), to_markdown(result) + "\n")
    print(to_markdown(result))


if __name__ == "__main__":
    main()

"""Analyse a Fig. 2 pilot sweep: what each design would have measured, on pilot seeds.

    python experiments/analyze_pilot.py runs/pilot_fig2 [--study pilot_fig2]
        [--out docs/results/pilot_fig2.json] [--no-designs]

The pilot runs a wide grid (64x in alpha, 10 lambda values) with a 10,000-example held-out
test sample and 2 pilot seeds. Smaller designs are *sub-designs* of it: fewer alpha rows,
every other lambda, one seed, the first n test examples. For each, the script computes the
slope s = d log lambda* / d log alpha of every optimizer and the paired differences
Delta = s(L2) - s(decoupled), with 90 % bootstrap intervals, so that the presets' designs
are chosen on seeds that their reported results never use (docs/experiment-design.md).
Writes a JSON file and, beside it, the same numbers as markdown (``.md``), which
docs/experiment-design.md includes; ``--no-designs`` skips the sub-designs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from weightdecay.harness.store import load_records, sqlite_url
from weightdecay.harness.vectors import pack_wrong, unpack_wrong
from weightdecay.report.resample import Replicates
from weightdecay.report.stats import heat_map, interval, slope_fit

OPTS = ("sgd", "sgdw", "adam", "adamw")
PAIRS = (("sgd", "sgdw"), ("adam", "adamw"))


def truncate(records, n):
    """The records as if scored on the first n held-out examples only."""
    out = []
    for r in records:
        r = dict(r)
        if isinstance(r.get("final_test_wrong"), str):
            w = unpack_wrong(r["final_test_wrong"], int(r["num_test"]))[:n]
            r["final_test_wrong"] = pack_wrong(w)
            r["final_test_error"] = float(w.mean())
        r["num_test"] = n
        out.append(r)
    return out


def design(records, *, rows_per_opt, lam_step, seeds, n_test, n_boot, lam_offset=0):
    recs = [r for r in records if int(r["seed"]) in seeds]
    keep = []
    for r in recs:
        lrs = rows_per_opt[r["optimizer"]]
        if float(r["lr"]) not in lrs:
            continue
        keep.append(r)
    # every lam_step-th lambda of each optimizer's grid
    by_opt = {}
    for r in keep:
        by_opt.setdefault(r["optimizer"], set()).add(float(r["weight_decay"]))
    lam_keep = {o: sorted(v)[lam_offset::lam_step] for o, v in by_opt.items()}
    keep = [r for r in keep if float(r["weight_decay"]) in lam_keep[r["optimizer"]]]
    if n_test is not None:
        keep = truncate(keep, n_test)
    reps = Replicates(keep, n_boot=n_boot)
    fits, maps = {}, {}
    for o in OPTS:
        hm = heat_map(reps, lambda r, o=o: r["optimizer"] == o)
        maps[o] = hm
        fits[o] = slope_fit(hm)
    out = {o: {"slope": fits[o].slope.to_dict(), "reading": fits[o].reading,
               "rows_used": int(fits[o].rows_used.sum()), "edge_rows": int(fits[o].edge.sum()),
               "best_error": float(np.nanmin(maps[o].mean))} for o in OPTS}
    for a, b in PAIRS:
        d = interval(fits[a].replicates - fits[b].replicates)
        out[f"delta_{a}_{b}"] = d.to_dict()
    out["runs"] = len(keep)
    return out, maps, fits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--study", default="pilot_fig2")
    ap.add_argument("--out", default="docs/results/pilot_fig2.json")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--no-designs", action="store_true", help="only the full pilot design")
    args = ap.parse_args(argv)
    url = sqlite_url(Path(args.folder) / "store.db")
    records = [r for r in load_records(url, args.study) if r["state"] == "COMPLETE"]
    if not records:
        sys.exit("no completed trials")
    lrs = {o: sorted({float(r["lr"]) for r in records if r["optimizer"] == o}) for o in OPTS}
    seeds = sorted({int(r["seed"]) for r in records})
    n_full = int(records[0]["num_test"])
    t0 = time.time()
    full, maps, fits = design(records, rows_per_opt=lrs, lam_step=1, seeds=seeds,
                              n_test=None, n_boot=args.boot)
    print(f"full pilot design: {full['runs']} runs, {time.time() - t0:.1f} s", file=sys.stderr)
    md = [f"**{args.study}**: {full['runs']} runs, seeds {seeds}, {n_full} held-out test "
          f"examples, {args.boot} bootstrap replicates.", ""]
    for o in OPTS:
        hm, fit = maps[o], fits[o]
        md += [f"*{o}* — mean final test error (%) per (α, λ); last column: the row's best "
               "λ (log2; *edge*: optimum at the grid's edge, *out*: row outside the basin)", "",
               "| α \\ log2 λ | " + " | ".join(f"{np.log2(c):.0f}" for c in hm.cols)
               + " | best |", "|---" * (len(hm.cols) + 2) + "|"]
        for i, lr in enumerate(hm.rows):
            cells = ["div" if hm.diverged[i, j] else f"{100 * hm.mean[i, j]:.2f}"
                     for j in range(len(hm.cols))]
            ll = fit.log_lambda[0, i]
            best = f"{np.log2(np.exp(ll)):.2f}" if np.isfinite(ll) else (
                "edge" if fit.edge[i] else "out")
            md.append(f"| 2^{np.log2(lr):.0f} | " + " | ".join(cells) + f" | {best} |")
        md += ["", f"slope {fit.slope.format()}: **{fit.reading}**", ""]
    for a, b in PAIRS:
        d = full[f"delta_{a}_{b}"]
        md.append(f"- Δ = s({a}) − s({b}): {d['estimate']:+.2f} [{d['lo']:+.2f}, "
                  f"{d['hi']:+.2f}]" if d["lo"] is not None else f"- Δ {a}−{b}: n/a")
    results = {"full": full}
    if not args.no_designs:
        results.update(_sub_designs(records, lrs, seeds, n_full, maps, args.boot, md))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _sub_designs(records, lrs, seeds, n_full, maps, n_boot, md):
    """Sub-designs of the pilot: alpha span (rows centred on the best rows), lambda step,
    seeds, test size; appends their table to ``md``."""
    def centred(o, k):
        all_rows = lrs[o]
        best = np.nanargmin(np.nanmin(maps[o].mean, axis=1))
        lo = int(np.clip(best - k // 2, 0, len(all_rows) - k))
        return all_rows[lo:lo + k]

    def w(d):
        return "n/a" if d["lo"] is None else f"{d['hi'] - d['lo']:.2f}"

    def f(d):
        if d["lo"] is None:
            return "n/a"
        return f"{d['estimate']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"

    out = {}
    md += ["", "| α rows (span) | λ step (offset) | seeds | test n | runs | slope interval "
           "widths SGD/SGDW/Adam/AdamW | readings | Δ SGD−SGDW | Δ Adam−AdamW |",
           "|---|---|---|---|---|---|---|---|---|"]
    for k in (5, 6, 7):
        for step, offset in ((1, 0), (2, 0), (2, 1)):
            for ns in ((1, 2) if len(seeds) > 1 else (1,)):
                for n in (1000, 2000, 5000, n_full):
                    if offset and (ns, n) != (len(seeds), n_full):
                        continue  # the offset only matters for the grid's placement
                    rows = {o: centred(o, k) for o in OPTS}
                    res, _, _ = design(records, rows_per_opt=rows, lam_step=step,
                                       seeds=seeds[:ns], n_test=n, n_boot=n_boot,
                                       lam_offset=offset)
                    out[f"rows{k}_step{step}_offset{offset}_seeds{ns}_n{n}"] = res
                    widths = "/".join(w(res[o]["slope"]) for o in OPTS)
                    reads = "/".join(res[o]["reading"] for o in OPTS)
                    md.append(f"| {k} ({2 ** (k - 1)}×) | ×{2 ** step} ({offset}) | {ns} | "
                              f"{n} | {res['runs']} | {widths} | {reads} | "
                              f"{f(res['delta_sgd_sgdw'])} | {f(res['delta_adam_adamw'])} |")
    return out


if __name__ == "__main__":
    main()

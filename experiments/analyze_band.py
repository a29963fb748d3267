"""Banded Fig. 2 grids: how much power does a design keep that runs only the cells around each
row's expected optimum?

    python experiments/analyze_band.py --pilot runs/pilot_fig2 \
        --eval runs/pilot_fig2:pilot_fig2 runs/pilot_fig2:pilot_fig2:quick-rows \
        [--cells 4,5,6,7,5+3,4+3,3+5] [--out docs/results/band_design.json]

1. The band is chosen on the PILOT seeds (1000, 1001): for each optimizer, the line through
   the pilot's per-row optima, log2 λ*(α) = c + s·log2 α (the slope fit of the full pilot).
2. A banded sub-design keeps, in every α row, the ``K`` λ cells of the grid nearest that
   line; every seed gets the same cells (the paired bootstrap stays valid), and the row
   optimum is selected inside every replicate, among the band's cells (an optimum on the
   band's edge is not bracketed, exactly as at a grid's edge).
3. Each evaluation store is scored twice on the same bootstrap draws: the whole grid it ran
   and the banded subset, so the table gives the ratio of interval widths at equal seeds.
4. ``K+N``: the band of K cells that then brackets each row's optimum as the harness does
   (``extend = N``, :func:`weightdecay.harness.band.bracket_next` on the mean error of the
   row's cells over the seeds), up to N more values per row.

Writes a JSON file and the same numbers as markdown beside it (``.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from weightdecay.harness.band import band_cells, bracket_next
from weightdecay.harness.store import load_records, sqlite_url
from weightdecay.report.resample import Replicates
from weightdecay.report.stats import heat_map, interval, slope_fit

OPTS = ("sgd", "sgdw", "adam", "adamw")
PAIRS = (("sgd", "sgdw"), ("adam", "adamw"))
QUICK_ROWS = {o: {2.0**k for k in range(lo, lo + 5)}
              for o, lo in (("sgd", -4), ("sgdw", -4), ("adam", -7), ("adamw", -7))}


def completed(folder: str, study: str) -> list[dict]:
    url = sqlite_url(Path(folder) / "store.db")
    return [r for r in load_records(url, study) if r["state"] == "COMPLETE"]


def pilot_lines(records: list[dict], n_boot: int) -> dict[str, tuple[float, float]]:
    """(intercept, slope) of log2 λ* on log2 α per optimizer, from the pilot's slope fits."""
    reps = Replicates(records, n_boot=n_boot)
    lines = {}
    for o in OPTS:
        fit = slope_fit(heat_map(reps, lambda r, o=o: r["optimizer"] == o))
        # the fit works in natural logs; the same line in log2 units has the same slope
        lines[o] = (fit.intercept / np.log(2), fit.slope.estimate)
    return lines


def _error(r: dict) -> float:
    err = r.get("final_test_error")
    return float(err) if not r.get("diverged") and err is not None and np.isfinite(err) \
        else float("inf")


def band(records: list[dict], lines: dict, k: int | dict[str, int], extend: int = 0
         ) -> list[dict]:
    """The records inside the K-cell band of each row (cells nearest the pilot line); ``k``
    one number, or one per optimizer; ``extend``: then the harness's bracketing rule, up to
    that many values per row (the cells a band with ``extend`` would have run)."""
    keep = []
    for o in OPTS:
        k_o = k[o] if isinstance(k, dict) else k
        recs = [r for r in records if r["optimizer"] == o]
        lams = sorted({float(r["weight_decay"]) for r in recs})
        c, s = lines[o]
        for lr in sorted({float(r["lr"]) for r in recs}):
            row = [r for r in recs if float(r["lr"]) == lr]
            # the harness's own rules (a spec's band through (1, 2**c) with slope s)
            chosen = set(band_cells(lams, lr, 1.0, 2.0**c, s, k_o))
            for _ in range(extend):
                error = {v: float(np.mean([_error(r) for r in row
                                           if float(r["weight_decay"]) == v]))
                         for v in chosen}
                nxt = bracket_next(lams, sorted(chosen), error)
                if nxt is None:
                    break
                chosen.add(nxt)
            keep += [r for r in row if float(r["weight_decay"]) in chosen]
    return keep


def score(records: list[dict], n_boot: int) -> dict:
    reps = Replicates(records, n_boot=n_boot)
    fits = {o: slope_fit(heat_map(reps, lambda r, o=o: r["optimizer"] == o)) for o in OPTS}
    out: dict = {o: {"slope": fits[o].slope.to_dict(), "reading": fits[o].reading,
                     "rows_used": int(fits[o].rows_used.sum())} for o in OPTS}
    for a, b in PAIRS:
        out[f"delta_{a}_{b}"] = interval(fits[a].replicates - fits[b].replicates).to_dict()
    out["runs"] = len(records)
    return out


def width(d: dict) -> float:
    return float("nan") if d["lo"] is None else d["hi"] - d["lo"]


def fmt(d: dict) -> str:
    if d["lo"] is None:
        return "n/a"
    return f"{d['estimate']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pilot", required=True, help="folder of the pilot's store.db")
    ap.add_argument("--pilot-study", default="pilot_fig2")
    ap.add_argument("--eval", nargs="+", required=True,
                    help="FOLDER:STUDY to score; FOLDER:STUDY:quick-rows scores only the "
                         "learning rates of the quick preset (its 5 rows)")
    ap.add_argument("--cells", default="4,5,6,7",
                    help="comma-separated K, each one number or sgd=5:sgdw=6:adam=5:adamw=6, "
                         "and +N for a band that brackets with extend = N (5+3)")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", default="docs/results/band_design.json")
    args = ap.parse_args(argv)
    lines = pilot_lines(completed(args.pilot, args.pilot_study), args.boot)
    md = ["Band centres, from the pilot's per-row optima (seeds 1000, 1001): "
          + "; ".join(f"{o}: log2 λ* = {c:+.2f} {s:+.2f}·log2 α" for o, (c, s) in lines.items()),
          "", "| store | seeds | K | runs | slope SGD / SGDW / Adam / AdamW (width ÷ whole "
          "grid's) | readings | Δ SGD−SGDW | Δ Adam−AdamW |", "|---|---|---|---|---|---|---|---|"]
    results: dict = {"lines": {o: {"intercept_log2": c, "slope": s}
                               for o, (c, s) in lines.items()}, "designs": {}}
    for spec in args.eval:
        folder, study, *rows_only = spec.split(":")
        records = completed(folder, study)
        if rows_only == ["quick-rows"]:
            records = [r for r in records if float(r["lr"]) in QUICK_ROWS[r["optimizer"]]]
            study = f"{study} (quick's 5 rows)"
        seeds = sorted({int(r["seed"]) for r in records})
        whole = score(records, args.boot)
        results["designs"][f"{study}/whole"] = whole
        rows = [("whole", whole)]
        for cells in args.cells.split(","):
            base, _, extend = cells.partition("+")
            k: int | dict[str, int] = (int(base) if ":" not in base else
                                       {o: int(n) for o, n in
                                        (part.split("=") for part in base.split(":"))})
            res = score(band(records, lines, k, int(extend or 0)), args.boot)
            results["designs"][f"{study}/K{cells}"] = res
            rows.append((cells, res))
        for name, res in rows:
            slopes = " / ".join(
                f"{fmt(res[o]['slope'])} ({width(res[o]['slope']) / width(whole[o]['slope']):.2f})"
                for o in OPTS)
            deltas = [f"{fmt(res[f'delta_{a}_{b}'])} "
                      f"({width(res[f'delta_{a}_{b}']) / width(whole[f'delta_{a}_{b}']):.2f})"
                      for a, b in PAIRS]
            md.append(f"| {study} | {seeds} | {name} | {res['runs']} | {slopes} | "
                      + "/".join(res[o]["reading"] for o in OPTS) + f" | {deltas[0]} | "
                      f"{deltas[1]} |")
        print("\n".join(md[-len(rows):]), file=sys.stderr)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Two designs of one preset, side by side: the same claims on the same seeds, before and after.

    python experiments/compare_designs.py \
        --pair "seeds 0, 1" docs/results/quick-whole-grid.json docs/results/quick.json \
        --pair "seeds 100, 101" docs/results/quick-whole-grid-replication.json \
               docs/results/quick-replication.json \
        --out docs/results/quick_design_comparison.md

Each FILE is a results file written by ``python -m weightdecay.report.publish write`` (its
``scorecard``). For every scored claim with an interval: both estimates, the width of the
new interval over the old one's, and whether the verdict is the same. Writes markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _claims(path: str) -> dict[str, dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {c["key"]: c for c in data["scorecard"]}


def _width(c: dict) -> float | None:
    est = c.get("estimate") or {}
    if est.get("lo") is None or est.get("hi") is None:
        return None
    return est["hi"] - est["lo"]


def compare(label: str, before: str, after: str) -> list[str]:
    old, new = _claims(before), _claims(after)
    lines = [f"**{label}** (`{before}` → `{after}`)", "",
             "| claim | before | after | width after ÷ before | verdict before → after |",
             "|---|---|---|---|---|"]
    for key, c in new.items():
        o = old.get(key)
        if o is None or o["verdict"] == "not run" or c["verdict"] == "not run":
            continue
        w_old, w_new = _width(o), _width(c)
        ratio = "—" if not (w_old and w_new) else f"{w_new / w_old:.2f}"
        same = "same" if o["verdict"] == c["verdict"] else "**changed**"
        lines.append(f"| {c['source']}: {key} | {o['estimate_text']} | {c['estimate_text']} | "
                     f"{ratio} | {o['verdict']} → {c['verdict']} ({same}) |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", nargs=3, action="append", required=True,
                    metavar=("LABEL", "BEFORE", "AFTER"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    lines: list[str] = []
    for label, before, after in args.pair:
        lines += compare(label, before, after)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

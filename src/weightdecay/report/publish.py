"""Committed results: copy a preset run's scorecard and figures into ``docs/results/``,
regenerate the README's result blocks from them, and check a fresh run against them.

    python -m weightdecay.report.publish write runs/quick --name quick
    python -m weightdecay.report.publish check runs/quick --name quick
    python -m weightdecay.report.publish readme

``write`` reads ``RUN/stats.json`` -- the serialization of the run's
:class:`~weightdecay.report.model.Report`, written by ``weightdecay report``/``reproduce`` --
and renders it: ``docs/results/NAME.json`` (the scorecard and the Fig. 2 slopes),
``NAME.md`` (the scorecard as a markdown table, included by the docs site, with the
mechanism preset's table of monitored settings, the Report's replication and timing
sentences) and copies of the figures named in :data:`FIGURES` that the run drew; then it
regenerates the README. Every file is written atomically.

``readme`` fills every README block between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` with ``docs/results/NAME.md`` (or ``NAME.txt``, a benchmark's
printed output, in a code fence). Nothing in the README's results is typed; a test checks
that the README and the files agree.

``check`` compares a fresh run with the committed file: every verdict must be equal and every
fresh estimate must lie inside the committed 90 % interval (an estimate without an interval:
within ``--tol``, absolute); it prints each difference and exits 1 when there is one (CI
runs it after ``make quick``). The runs are bit-for-bit deterministic on one CPU type, but
not across CPU types (the convolution kernels torch picks for a CPU's vector
instructions round differently, and ten epochs amplify that like a change of seed): the
same quick preset on two CPUs gave Fig. 2 slopes up to 0.31 apart, each inside the other's
interval, with the same verdicts. So the committed interval, the statement the README
makes, is the tolerance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import write_atomic
from .model import Replication, Timing

__all__ = ["check", "fill_readme", "markdown_table", "write"]

#: the figures of a run folder copied into the results (``NAME-FIGURE.png``), where drawn
FIGURES = ("fig2", "slopes", "equilibrium", "rotation", "gradnorm", "decay_subsets")
#: an estimate that has no interval (e.g. the exact Prop. 1 check) may differ this much
#: (absolute) from the committed one before ``check`` fails
DEFAULT_TOL = 0.05


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"publish: error: {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"publish: error: {path} is not JSON ({e})") from None


def _load_scorecard(path: Path) -> dict[str, Any]:
    """``path`` (a run's ``stats.json`` or a committed results file), checked to hold a
    scorecard: a list of claims, each with a string ``key`` and a ``verdict``."""
    data = _load(path)
    claims = data.get("scorecard") if isinstance(data, dict) else None
    if not isinstance(claims, list) or not all(
            isinstance(c, dict) and isinstance(c.get("key"), str) and "verdict" in c
            for c in claims):
        raise SystemExit(f"publish: error: {path} holds no scorecard (a list of claims, each "
                         "with a key and a verdict)")
    return data


def markdown_table(scorecard: Sequence[Mapping[str, Any]], *, ran_only: bool = True) -> str:
    """The scorecard as a markdown table (claims not run are left out by default)."""
    rows = ["| source | claim | metric | estimate [90 % interval] | verdict | detail |",
            "|---|---|---|---|---|---|"]
    for c in scorecard:
        if ran_only and c["verdict"] == "not run":
            continue
        cells = [c["source"], c["claim"], c["metric"], c["estimate_text"], f"**{c['verdict']}**",
                 c.get("detail", "")]
        rows.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    for verdict in ("refuted", "inconclusive"):
        said = [f"{c['source']}: {c['claim']}" for c in scorecard if c["verdict"] == verdict]
        if said:
            rows.append(f"\n**{verdict.capitalize()} here:** " + "; ".join(said) + ".")
    return "\n".join(rows)


def _summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    out = {"scorecard": stats["scorecard"]}
    if "replication" in stats:
        out["replication"] = stats["replication"]
    slopes = {}
    for title, entry in (stats.get("fig2") or {}).items():
        if entry.get("slope"):
            s = entry["slope"]
            slopes[title] = {"slope": s["slope"], "reading": s["reading"],
                             "rows": s.get("rows"), "best_lambda": s["best_lambda"]}
    out["fig2_slopes"] = slopes
    if stats.get("mechanism"):
        out["mechanism"] = stats["mechanism"]["rows"]
    return out


_BLOCK = re.compile(r"(<!-- results:([\w.-]+) -->)\n.*?(<!-- /results:\2 -->)", re.S)


def fill_readme(text: str, results: Path) -> str:
    """``text`` with every results block filled from ``results/NAME.md`` or ``NAME.txt``."""
    def fill(m: re.Match) -> str:
        name = m.group(2)
        md, txt = results / f"{name}.md", results / f"{name}.txt"
        if md.exists():
            body = md.read_text(encoding="utf-8").strip()
        elif txt.exists():
            body = "```text\n" + txt.read_text(encoding="utf-8").strip() + "\n```"
        else:
            raise SystemExit(f"publish: error: README block {name!r} has no {md} or {txt}")
        return f"{m.group(1)}\n{body}\n{m.group(3)}"

    return _BLOCK.sub(fill, text)


def write(run: Path, name: str, results: Path, readme: Path | None) -> None:
    """Write ``results/NAME.json``, ``NAME.md`` and the figures; regenerate the README."""
    stats = _load_scorecard(run / "stats.json")
    results.mkdir(parents=True, exist_ok=True)
    summary = _summary(stats)
    lines = [markdown_table(stats["scorecard"])]
    if stats.get("variants", {}).get("markdown"):
        summary["variants"] = stats["variants"]["rows"]
        lines = [stats["variants"]["markdown"]]  # the variants preset scores no paper claim
    if stats.get("mechanism", {}).get("markdown"):
        lines.append("\n" + stats["mechanism"]["markdown"])
    if stats.get("replication"):
        lines.append(f"\nReplication on other seeds: "
                     f"{Replication.from_dict(stats['replication']).sentence()}.")
    timing = stats.get("timing")
    if not timing and (run / "reproduce.json").exists():  # a run folder of version 0.1.0
        timing = _load(run / "reproduce.json")
    if timing:
        summary["reproduce"] = timing
        lines.append("\n" + Timing.from_dict(timing).sentence())
    write_atomic(results / f"{name}.json", json.dumps(summary, indent=1) + "\n", root=results)
    write_atomic(results / f"{name}.md", "\n".join(lines) + "\n", root=results)
    for fig in FIGURES:
        if (run / f"{fig}.png").exists():
            write_atomic(results / f"{name}-{fig}.png", (run / f"{fig}.png").read_bytes(),
                         root=results)
    if readme is not None:
        write_atomic(readme, fill_readme(readme.read_text(encoding="utf-8"), results))


def check(run: Path, reference: Path, tol: float = DEFAULT_TOL) -> list[str]:
    """Differences between a fresh run's scorecard and the committed one (empty: none).

    Verdicts must be equal; a fresh estimate must lie inside the committed interval
    ``[lo, hi]`` (or, where the committed entry has no interval, within ``tol``). A claim
    that one side lacks and the other did not run (a claim added since) is no difference.
    """
    fresh = {c["key"]: c for c in _load_scorecard(run / "stats.json")["scorecard"]}
    ref = {c["key"]: c for c in _load_scorecard(reference)["scorecard"]}
    problems = []
    for key in sorted(set(ref) | set(fresh)):
        a, b = ref.get(key), fresh.get(key)
        if (a or b or {}).get("verdict") == "not run" and (a is None or b is None):
            continue  # a claim added (or removed) since, not run on either side
        if a is None or b is None:
            problems.append(f"{key}: only in the {'fresh run' if a is None else 'reference'}")
            continue
        if a["verdict"] != b["verdict"]:
            problems.append(f"{key}: verdict {b['verdict']!r}, committed {a['verdict']!r}")
        ea, eb = a.get("estimate") or {}, b.get("estimate") or {}
        x, y = ea.get("estimate"), eb.get("estimate")
        if (x is None) != (y is None):
            problems.append(f"{key}: estimate {y!r}, committed {x!r}")
        elif x is None or y is None:
            continue
        elif ea.get("lo") is not None and ea.get("hi") is not None:
            if not ea["lo"] <= y <= ea["hi"]:
                problems.append(f"{key}: estimate {y:+.3f} outside the committed interval "
                                f"[{ea['lo']:+.3f}, {ea['hi']:+.3f}]")
        elif abs(x - y) > tol:
            problems.append(f"{key}: estimate {y:+.3f}, committed {x:+.3f} (tolerance {tol})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weightdecay.report.publish",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("write", "check", "readme"))
    ap.add_argument("run", type=Path, nargs="?", help="the run's output folder (stats.json)")
    ap.add_argument("--name", help="results name, e.g. quick")
    ap.add_argument("--results", type=Path, default=Path("docs/results"))
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--tol", type=float, default=DEFAULT_TOL,
                    help="for estimates without an interval (absolute)")
    args = ap.parse_args(argv)
    if args.action == "readme":
        write_atomic(args.readme, fill_readme(args.readme.read_text(encoding="utf-8"),
                                              args.results))
        print(f"{args.readme}: results blocks regenerated from {args.results}")
        return 0
    if args.run is None or args.name is None:
        ap.error(f"{args.action} needs RUN and --name")
    from ..harness.spec import SpecError, check_study_name

    try:  # NAME names files in --results: a safe name keeps them there
        check_study_name(args.name, "--name")
    except SpecError as exc:
        raise SystemExit(f"publish: error: {exc}") from None
    if args.action == "write":
        write(args.run, args.name, args.results, None if args.no_readme else args.readme)
        print(f"wrote {args.results / (args.name + '.json')} and "
              f"{args.results / (args.name + '.md')}")
        return 0
    problems = check(args.run, args.results / f"{args.name}.json", args.tol)
    for p in problems:
        print(f"publish: {p}", file=sys.stderr)
    if problems:
        print(f"publish: {len(problems)} difference(s) from {args.results}/{args.name}.json",
              file=sys.stderr)
        return 1
    print(f"{args.run}: scorecard matches {args.results / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Terminal summaries of a sweep: the best run per setting, and the runs that failed.

Plain text for the terminal (``weightdecay sweep`` / ``reproduce`` print them when a sweep
ends); the HTML report has its own tables. Input: the records of
``weightdecay.harness.store.load_records`` (one dict per planned run).

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["failure_lines", "summary_table"]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def summary_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A text table: per experiment, optimizer, schedule and epochs, the best run.

    Columns: runs, complete, diverged, best final test error [%] and its lr and decay
    (lambda, or lambda_norm marked ``n=``), mean over seeds of that setting.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        gk = (r.get("experiment"), r["optimizer"], r["schedule"], r["epochs"],
              "norm" if r.get("weight_decay_norm") is not None else "raw")
        groups.setdefault(gk, []).append(r)
    header = ("experiment", "optimizer", "schedule", "epochs", "runs", "done", "div",
              "best err %", "lr", "decay")
    rows = [header]
    for (exp, opt, sched, epochs, kind), rs in groups.items():
        done = [r for r in rs if r["state"] == "COMPLETE"]
        div = sum(1 for r in done if r.get("diverged"))
        settings: dict[tuple, list[float]] = {}
        for r in done:
            err = r.get("final_test_error")
            if r.get("diverged") or err is None or not math.isfinite(err):
                continue
            decay = r["weight_decay_norm"] if kind == "norm" else r["weight_decay"]
            settings.setdefault((r["lr"], decay), []).append(err)
        if settings:
            (lr, decay), errs = min(settings.items(), key=lambda kv: _mean(kv[1]))
            best = f"{100 * _mean(errs):.2f}"
            lr_s = f"{lr:.3g}"
            decay_s = f"n={decay:.3g}" if kind == "norm" else f"{decay:.3g}"
        else:
            best, lr_s, decay_s = "-", "-", "-"
        rows.append((str(exp), opt, sched, str(epochs), str(len(rs)), str(len(done)),
                     str(div), best, lr_s, decay_s))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def failure_lines(records: Sequence[Mapping[str, Any]], most: int = 5) -> list[str]:
    """One line per failed run (the first ``most``, then a count): its experiment,
    optimizer, lr, key and error; no lines when nothing failed."""
    failed = [r for r in records if r.get("state") == "FAIL"]
    lines = [
        f"FAILED [{r.get('experiment')}] {r.get('optimizer')} lr={r.get('lr'):g} "
        f"key={r.get('key')}: {r.get('error', 'no error recorded')}"
        for r in failed[:most]
    ]
    if len(failed) > most:
        lines.append(f"... and {len(failed) - most} more failed run(s)")
    return lines

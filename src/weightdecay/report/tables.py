"""The terminal's view of a run, a sweep and its :class:`~weightdecay.report.model.Report`:
a run's progress, the best setting of each group of runs, the runs that failed, the scored
claims, the replication.

Plain text for the terminal (``weightdecay train``, ``sweep``, ``report`` and ``reproduce``
print it).
The best settings are the Report's (:func:`weightdecay.report.model.setting_rows`, under
the one rule :func:`weightdecay.registry.best_setting`); after a bare sweep, which builds no
Report, they are computed from the records by the same function.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .model import Report, SettingRow, setting_rows

__all__ = ["epoch_line", "failure_lines", "incomplete_line", "replication_line",
           "report_lines", "run_line", "scorecard_lines", "summary_lines", "summary_table"]


def summary_table(source: Report | Sequence[Mapping[str, Any]]) -> str:
    """A text table: per experiment, optimizer, schedule, epochs and kind of decay, the best
    setting (of ``source``: a Report, or a sweep's records).

    Columns: runs, complete, diverged, best final test error [%] (mean over the setting's
    seeds) and its lr and decay (lambda, or lambda_norm marked ``n=``).
    """
    rows_in: list[SettingRow] = (source.settings if isinstance(source, Report)
                                 else setting_rows(source))
    header = ("experiment", "optimizer", "schedule", "epochs", "runs", "done", "div",
              "best err %", "lr", "decay")
    rows = [header]
    for row in rows_in:
        best, lr_s, decay_s = "-", "-", "-"
        if row.best is not None:
            setting = row.best.setting
            best = f"{100 * row.best.error:.2f}"
            lr_s = f"{setting['lr']:.3g}"
            decay = setting[row.decay_key]
            decay_s = (f"n={decay:.3g}" if row.decay_key == "weight_decay_norm"
                       else f"{decay:.3g}")
        rows.append((str(row.experiment or "(none)"), str(row.optimizer), str(row.schedule),
                     str(row.epochs), str(row.runs), str(row.complete), str(row.diverged),
                     best, lr_s, decay_s))
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


def incomplete_line(records: Sequence[Mapping[str, Any]], logs: Any) -> str:
    """How many of a sweep's runs did not complete, and where the worker logs are."""
    done = sum(1 for r in records if r.get("state") == "COMPLETE")
    failed = sum(1 for r in records if r.get("state") == "FAIL")
    return (f"{len(records) - done} of {len(records)} runs did not complete ({failed} failed; "
            f"errors above, worker logs in {logs})")


def scorecard_lines(report: Report) -> list[str]:
    """One line per scored claim: ``[verdict] source: claim — estimate [interval]``."""
    return [f"[{c.verdict:>12}] {c.source}: {c.claim} — {c.estimate_text()}"
            for c in report.scorecard if c.verdict != "not run"]


def replication_line(report: Report) -> str | None:
    """What replicated on other seeds, or None when the report compares nothing."""
    if report.replication is None:
        return None
    return f"replication on other seeds: {report.replication.sentence()}"


def summary_lines(source: Report | Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`summary_table` and :func:`failure_lines` of a Report or a sweep's records."""
    records = source.records if isinstance(source, Report) else source
    return [summary_table(source), *failure_lines(records)]


def report_lines(report: Report) -> list[str]:
    """The report's notes, the scored claims and what replicated (:func:`scorecard_lines`,
    :func:`replication_line`)."""
    line = replication_line(report)
    return ([f"note: {n}" for n in report.notes] + scorecard_lines(report)
            + ([] if line is None else [line]))


def epoch_line(epoch: int, epochs: int, m: Mapping[str, Any]) -> str:
    """One epoch of a run (``weightdecay.harness.train.run``'s ``on_epoch`` metrics)."""
    return (f"epoch {epoch:4d}/{epochs}  loss {m['train_loss']:.4f}  test error "
            f"{100 * m['test_error']:6.2f}%  |theta| {m['weight_norm']:.3f}  eta "
            f"{m['eta']:.4f}  decay {m['effective_decay']:.3g}")


def run_line(record: Mapping[str, Any]) -> str:
    """How a run ended, from its record."""
    if record["diverged"]:
        return f"diverged after {len(record['history']['epoch'])} epochs"
    return (f"final test error {100 * record['final_test_error']:.2f}%  best "
            f"{100 * record['best_test_error']:.2f}%  final train loss "
            f"{record['final_train_loss']:.4f}  wall {record['wall_seconds']:.1f} s")

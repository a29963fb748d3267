"""The ``weightdecay`` command line: train, sweep, worker, report, export, reproduce.

Each command is a small class: its arguments beside a ``run`` that calls the function of
:mod:`weightdecay.api` of the same name and prints what it returns. Bad input: ONE line
``weightdecay: error: ...`` on stderr, exit 2, nothing written (and nothing ever through a
link leading out of ``--out``). Runs that did not all complete: exit 1. SIGINT / SIGTERM:
the running trials are handed back, one line, exit 130 / 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, api
from .harness import spec as sweep_spec
from .harness.config import FIELD_HELP, RunConfig, name_parser
from .harness.store import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL
from .harness.usercode import check_modules
from .registry import OPTIMIZERS, SCHEDULES
from .report import tables

__all__ = ["build_parser", "main"]

PROG = "weightdecay"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``weightdecay: error: ...``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------------------ types


def _typed(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its ``ValueError`` becomes the flag's error."""
    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = name
    return typed


def _count(low: int, high: int = 2**63) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().lstrip("+-").isdigit():
            raise ValueError(f"not an integer: {text!r}")
        if not low <= int(text) <= high:
            raise ValueError(f"must be in [{low}, {high}], got {int(text)}")
        return int(text)

    return _typed(parse, "integer")


_SHARED: dict[str, dict[str, Any]] = {
    "--storage": dict(metavar="URL", help="SQLAlchemy URL of the store, e.g. "
                      "sqlite:///runs/x/store.db or postgresql+psycopg2://user:pass@host/db"),
    "--study": dict(metavar="NAME", help="the sweep's Optuna study (letters, digits, . _ -)"),
    "--workers": dict(type=_count(0, 256), help="local worker processes, at most 256 (0: run "
                      "every trial in this process)"),
    "--threads": dict(type=_count(1, 1024), help="torch CPU threads, at most 1024"),
    "--no-progress": dict(action="store_true", help="no progress bar"),
    "--download": dict(action="store_true", help="fetch CIFAR-10 (md5-checked) into the cache "
                       "(~/.cache/weightdecay or $WEIGHTDECAY_CACHE) first, if missing"),
    "--adopt-study": dict(metavar="NAME", help="use the study NAME although weightdecay did "
                          "not create it (refused otherwise); its own trials are left alone"),
    "--allow-module": dict(metavar="MODULE", action="extend", default=[], type=_typed(
        check_modules, "modules"), help="import user code from MODULE (and its submodules)"),
}


def _add(p: argparse.ArgumentParser, *flags: str, **options: Any) -> None:
    """Add shared flags (with ``options``, e.g. ``required``, ``default``)."""
    for flag in flags:
        p.add_argument(flag, **{**_SHARED[flag], **options})


_FIELD_TYPES: dict[str, Callable[[str], Any]] = {  # a RunConfig field's flag, by type or name
    "str": str, "int": int, "float": _typed(sweep_spec.parse_number, "number"),
    "tuple": _typed(sweep_spec.parse_numbers, "numbers"),
    **{n: _typed(name_parser(n), n) for n in ("dataset", "model")}}
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")  # T_0 -> --T-0


# ------------------------------------------------------------------------------ commands


class Command:
    """One sub-command: its arguments (:meth:`add_arguments`) beside :meth:`run`."""

    name = help = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class Train(Command):
    name, help = "train", "train one run and print per-epoch progress"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(RunConfig):  # a flag not given: RunConfig's default
            kind = f.name if f.name in _FIELD_TYPES else str(f.type).split("[")[0].split(" ")[0]
            if kind == "bool":  # a switch away from the default: --no-decay-all, --cautious
                flag = _flag(f.name if not f.default else "no_" + f.name)
                p.add_argument(flag, dest=f.name, action="store_false" if f.default else
                               "store_true", default=argparse.SUPPRESS, help=FIELD_HELP[f.name])
                continue
            shown = "" if f.default is None else f" (default: {f.default})"
            p.add_argument(_flag(f.name), dest=f.name, type=_FIELD_TYPES[kind],
                           choices=_CHOICES.get(f.name), default=argparse.SUPPRESS,
                           help=FIELD_HELP[f.name] + shown)
        p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (resumed if it exists)")
        p.add_argument("--json", metavar="FILE", help="write the run's record as JSON to FILE")
        _add(p, "--threads", "--download", "--allow-module")

    def run(self, args: argparse.Namespace) -> int:
        from .harness.build import RunSetupError
        from .harness.checkpoint import CheckpointError

        fields = {f: getattr(args, f) for f in RunConfig.field_names() if hasattr(args, f)}
        if "weight_decay" in fields and "weight_decay_norm" in fields:
            raise UsageError("give --weight-decay or --weight-decay-norm, not both")
        try:
            config = RunConfig(**fields)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            record = api.train(config, checkpoint=args.checkpoint, download=args.download,
                               threads=args.threads, json_path=args.json, on_epoch=lambda e, m:
                               print(tables.epoch_line(e, config.epochs, m), flush=True),
                               allow_modules=args.allow_module)
        except (CheckpointError, RunSetupError) as exc:
            raise UsageError(str(exc)) from None
        print(tables.run_line(record))
        return 0


class Sweep(Command):
    name, help = "sweep", "run a sweep spec (TOML) with local workers, or plan it for remote ones"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", nargs="?", metavar="SPEC", help="sweep spec file (.toml or "
                       ".json); or describe one experiment with the grid flags below")
        _add(p, "--storage", "--study")
        _add(p, "--workers", default=1)
        p.add_argument("--plan-only", action="store_true", help="create the study and enqueue "
                       "its runs, then exit; run them with `weightdecay worker` on any machine "
                       "that reaches the store (the command is printed)")
        p.add_argument("--out", metavar="DIR", help="folder of the store (sqlite:///DIR/store.db "
                       "unless --storage), checkpoints, logs, trials.csv (default runs/<study>)")
        p.add_argument("--max-runs", type=_count(1), default=sweep_spec.DEFAULT_MAX_RUNS,
                       help="refuse a sweep planning more runs (default: %(default)s)")
        _add(p, "--no-progress", "--adopt-study")
        g = p.add_argument_group("grid flags (one experiment, instead of SPEC)")
        for field, (parse, text) in sweep_spec.GRID_KEYS.items():
            g.add_argument(_flag(field), dest=field, type=_typed(parse, parse.__name__),
                           help=text)

    def run(self, args: argparse.Namespace) -> int:
        given = {k: getattr(args, k) for k in sweep_spec.GRID_KEYS if getattr(args, k) is not None}
        if args.spec is not None and given:
            raise UsageError("give a SPEC file or grid flags, not both "
                             f"(got {_flag(next(iter(given)))})")
        if args.spec is None and not given:
            raise UsageError("give a SPEC file or the grid flags (--optimizers, --lr, ...)")
        spec = args.spec if args.spec is not None else sweep_spec.grid_spec(**given)
        outcome = api.sweep(spec, storage=args.storage, study=args.study, out=args.out,
                            workers=args.workers, plan_only=args.plan_only,
                            max_runs=args.max_runs, progress=not args.no_progress,
                            adopt_study=args.adopt_study)
        if outcome.planned_only:
            print(f"sweep {outcome.study!r}: {len(outcome.plan.runs)} runs planned, "
                  f"{outcome.enqueued} enqueued; none run here. Run them with (on any machine "
                  f"that reaches the store):\n{outcome.worker_command(args.out is not None)}"
                  f"{outcome.bracket_note()}")
            return 0
        print(*tables.summary_lines(outcome.records), sep="\n", file=sys.stderr, flush=True)
        print(f"trials: {outcome.out / 'trials.csv'}", flush=True)
        return _exit_code(outcome, "run the same command again to retry them")


class Worker(Command):
    name, help = "worker", "join a sweep from any machine and run its trials"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add(p, "--storage", "--study", required=True)
        p.add_argument("--out", metavar="DIR", help="checkpoint directory root (default: the "
                       "SQLite file's directory, else runs/<study>)")
        p.add_argument("--max-trials", type=_count(0), help="stop after this many trials")
        p.add_argument("--no-wait", action="store_true",
                       help="exit when no trial is waiting (do not wait for running ones)")
        _add(p, "--threads", "--download", "--allow-module")
        p.add_argument("--heartbeat-interval", type=_count(1), default=DEFAULT_HEARTBEAT_INTERVAL,
                       help="seconds between a running trial's heartbeats (default: %(default)s)")
        p.add_argument("--grace-period", type=_count(1), default=DEFAULT_GRACE_PERIOD, help="a "
                       "trial silent this long [s] is retried (default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        result = api.worker(args.storage, args.study, out=args.out, max_trials=args.max_trials,
                            wait=not args.no_wait, threads=args.threads, download=args.download,
                            heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period, allow_modules=args.allow_module)
        print(f"worker ran {result.ran} trial(s): {result.completed} complete, {result.failed} "
              f"failed, {result.lost} taken over by other workers")
        return 1 if result.failed else 0


class Report(Command):
    name, help = "report", "write figures, report.html and stats.json from a sweep's store"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add(p, "--storage", "--study", required=True)
        p.add_argument("--out", metavar="DIR", required=True, help="output directory")

    def run(self, args: argparse.Namespace) -> int:
        report = api.report(args.storage, args.study, args.out)
        print(*tables.report_lines(report), f"report: {Path(args.out) / 'report.html'}",
              sep="\n")
        return 0


class Export(Command):
    name, help = "export", "all trials of a sweep as CSV or JSON"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        _add(p, "--storage", "--study", required=True)
        p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")
        p.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")

    def run(self, args: argparse.Namespace) -> int:
        text = api.export(args.storage, args.study, args.format, args.output)
        if args.output is None:
            sys.stdout.write(text)
        else:
            print(f"wrote {args.output}", file=sys.stderr)
        return 0


class Reproduce(Command):
    name, help = "reproduce", "run a preset of the paper's experiments + report"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        from .harness.presets import preset_names

        p.add_argument("--preset", choices=preset_names(), required=True, help="quick "
                       "(Fig. 2), full (every claim), variants (decay rules), mechanism (why "
                       "AdamW's best λ moves), cifar10 (GPUs); measured times: docs/results.md")
        p.add_argument("--out", metavar="DIR", required=True, help="folder of the store, "
                       "trials.csv, report.html and stats.json; run again to resume")
        p.add_argument("--seeds", type=_typed(sweep_spec.parse_ints, "integers"),
                       help="rerun the preset on these seeds, comma-separated: every "
                            "experiment runs all of them; study <preset>-seeds-S1-...")
        _add(p, "--workers", default=2)
        _add(p, "--no-progress", "--download", "--adopt-study")

    def run(self, args: argparse.Namespace) -> int:
        outcome = api.reproduce(args.preset, args.out, seeds=args.seeds, workers=args.workers,
                                progress=not args.no_progress, download=args.download,
                                adopt_study=args.adopt_study)
        print(*tables.summary_lines(outcome.report), sep="\n", file=sys.stderr, flush=True)
        print(f"trials: {outcome.out / 'trials.csv'}", *tables.report_lines(outcome.report),
              f"report: {outcome.out / 'report.html'}", f"reproduce: {outcome.ran} of "
              f"{len(outcome.records)} runs run now, {outcome.wall_seconds / 60:.1f} min wall",
              sep="\n")
        return _exit_code(outcome, "run the same command again to resume")


COMMANDS: tuple[Command, ...] = (Train(), Sweep(), Worker(), Report(), Export(), Reproduce())


# ------------------------------------------------------------------------------ output


def _exit_code(outcome: Any, rerun: str) -> int:
    """0 if every run completed, else 1 with one line that says so."""
    if not outcome.done:
        print(f"{PROG}: {tables.incomplete_line(outcome.records, outcome.out / 'logs')}; "
              f"{rerun}", file=sys.stderr)
    return 0 if outcome.done else 1


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``weightdecay`` (all sub-commands)."""
    parser = _Parser(prog=PROG, description="Decoupled weight decay (Loshchilov & Hutter, ICLR "
                     "2019): single runs, sweeps in an Optuna study, the paper's figures.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``weightdecay`` command line; return the exit code (2: bad input; 130 / 143:
    stopped by SIGINT / SIGTERM, after handing back what was running)."""
    from ._io import UnsafePathError
    from .harness.interrupt import stop_on_signals
    from .harness.spec import SpecError
    from .harness.store import StoreError

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    try:
        args = build_parser().parse_args(argv)
        if (missing := api.missing_harness_module()) is not None:  # before any work
            raise UsageError(f"'{args.command}' needs {missing} (the harness extra), which is "
                             "not installed: pip install 'weightdecay[harness]'")
        with stop_on_signals():
            return next(c for c in COMMANDS if c.name == args.command).run(args)
    except (UsageError, api.InputError, SpecError, StoreError, UnsafePathError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM (harness.interrupt.Interrupted)
        print(f"{PROG}: {' '.join(str(exc).split()) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:  # e.g. `weightdecay export ... | head`
        return 0
    except OSError as exc:  # the environment failed (disk full, a file vanished): one line
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

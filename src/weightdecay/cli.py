"""The ``weightdecay`` command line: train, sweep, worker, report, export, reproduce.

::

    weightdecay train --optimizer adamw --lr 0.001 --weight-decay 0.001 --epochs 10
    weightdecay sweep examples/fig2_small.toml --workers 2 --out runs/fig2
    weightdecay sweep examples/fig2_small.toml --plan-only \\
        --storage postgresql+psycopg2://user@host/db        # then, on every machine:
    weightdecay worker --storage postgresql+psycopg2://user@host/db --study fig2_small
    weightdecay report --storage sqlite:///runs/fig2/store.db --study fig2 --out runs/fig2
    weightdecay export --storage sqlite:///runs/fig2/store.db --study fig2 --format csv
    weightdecay reproduce --preset quick --out runs/quick --workers 2
    weightdecay reproduce --preset quick --seeds 10,11 --out runs/quick-seeds

Bad input (unknown names, impossible grids, unknown spec keys, out-of-range numbers, a
malformed checkpoint, an output folder that is a file or read-only, malformed or
unreachable storage URLs, unsafe study names) prints ONE line ``weightdecay: error: ...``
on stderr and exits with code 2 before anything is written. Every file a command writes
lies under the folder or file the user named (``--out``, ``-o``, ``--json``,
``--checkpoint``, the SQLite store) or under ``runs/<study>``, never through a symbolic link
leading out of ``--out``. A sweep, worker or reproduce whose runs did not all complete exits
with code 1; one stopped by SIGINT / SIGTERM hands its running trials back, prints one line
and exits with code 130 / 143.

Length (~600 lines): the parser and the six commands are kept in one file so that the
whole command-line surface -- every flag, its check and its error line -- reads in one place;
the work itself lives in :mod:`weightdecay.harness`.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .harness.config import MAX_EPOCHS, MAX_T_MULT, SEED_LIMIT

__all__ = ["build_parser", "main"]

PROG = "weightdecay"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``weightdecay: error: ...``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------------------ types


def _number(part: str) -> float:
    """One number: ``0.001``, ``1e-3`` or ``2**-10`` (a finite float)."""
    part = part.strip()
    try:
        if "**" in part:
            base, exp = part.split("**", 1)
            value = float(base) ** float(exp)
        else:
            value = float(part)
    except (ValueError, OverflowError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a finite number: {part!r}") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {part!r}")
    return value


def _floats(text: str) -> list[float]:
    """Comma-separated numbers, e.g. ``0.001,0.002`` or ``2**-10,2**-9``."""
    return [_number(part) for part in text.split(",")]


def _ints(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") \
            from None


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _count(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


_non_negative_int = _count(0)
_positive_int = _count(1)
# processes and threads of one machine: past these, a sweep only slows down (or the OS says
# no); torch takes a thread count that fits a C int
_workers = _count(0, 256)
_threads = _count(1, 1024)


# ------------------------------------------------------------------------------ parser


def _add_storage(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--storage", required=required, metavar="URL",
                   help="SQLAlchemy URL of the store, e.g. sqlite:///runs/x/store.db or "
                        "postgresql+psycopg2://user:pass@host/db")
    p.add_argument("--study", required=required, metavar="NAME",
                   help="name of the sweep's Optuna study (letters, digits, . _ -)")


# RunConfig field -> (type, help); flags are --field-name; defaults come from RunConfig
_RUN_OPTIONS: dict[str, tuple[Any, str]] = {
    "dataset": (str, "data set"),
    "model": (str, "network"),
    "optimizer": (str, "sgd/adam: L2 added to the gradient; sgdw/adamw: decoupled decay"),
    "lr": (_number, "base learning rate alpha (> 0)"),
    "weight_decay": (_number, "raw lambda per update (times eta_t, NOT times alpha); the L2 "
                              "coefficient for sgd/adam"),
    "weight_decay_norm": (_number, "normalized lambda_norm (paper App. B.1), instead of "
                                   "--weight-decay"),
    "decay_convention": (str, "what lambda is multiplied by per update, one of "
                              "weightdecay.DECAY_CONVENTIONS (the paper: schedule = eta_t)"),
    "schedule": (str, "eta_t schedule"),
    "T_0": (_number, "first restart period in epochs (schedule=restarts)"),
    "T_mult": (_number, f"restart period growth factor (1 to {MAX_T_MULT:g})"),
    "milestones": (_floats, "step-drop epochs, comma-separated (default: 30/60/80%% of epochs)"),
    "drop_factor": (_number, "multiplier at each step-drop milestone, in (0, 1]"),
    "epochs": (int, f"training epochs (at most {MAX_EPOCHS})"),
    "batch_size": (int, "examples per update"),
    "seed": (int, f"random seed, in [0, {SEED_LIMIT})"),
    "device": (str, "cpu, cuda, cuda:N or mps"),
    "momentum": (_number, "SGD momentum / Adam beta1, in [0, 1)"),
    "width": (int, "model width (channels / hidden units; default: the model's own)"),
    "test_size": (int, "mnist1d: N held-out test signals from the generator instead of the "
                       "canonical 1000"),
    "eval_every": (int, "evaluate the test error every N epochs (and after the last)"),
    "l1": (_number, "L1 factor (sgd/adam: l1*sign(theta) in the gradient; sgdw/adamw: "
                    "soft-threshold after the update)"),
}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add_run_config(p: argparse.ArgumentParser) -> None:
    """The RunConfig fields as options; a field not given takes RunConfig's default."""
    from .harness.config import DATASETS, MODELS, OPTIMIZERS, SCHEDULES, RunConfig

    choices = {"dataset": DATASETS, "model": MODELS, "optimizer": OPTIMIZERS,
               "schedule": SCHEDULES}
    for field, (kind, text) in _RUN_OPTIONS.items():
        default = RunConfig.default(field)
        shown = "" if default is None else f" (default: {default})"
        p.add_argument(_flag(field), dest=field, type=kind, choices=choices.get(field),
                       default=argparse.SUPPRESS, help=text + shown)
    p.add_argument("--no-decay-all", dest="decay_all", action="store_false",
                   default=argparse.SUPPRESS,
                   help="exempt biases and 1-D tensors from decay (the paper decays all)")
    p.add_argument("--cautious", action="store_true", default=argparse.SUPPRESS,
                   help="cautious decay: only where update and weight agree in sign "
                        "(sgdw/adamw)")
    p.add_argument("--scale-invariant-only", action="store_true", default=argparse.SUPPRESS,
                   help="decay only the weights a normalization makes scale-invariant")


_DOWNLOAD_HELP = ("fetch CIFAR-10 (the official archive, md5-checked) into the cache "
                  "(~/.cache/weightdecay or $WEIGHTDECAY_CACHE) first, if it is missing")
_MAX_RUNS_HELP = "refuse a sweep planning more runs than this (default: {})"
_ADOPT_HELP = ("use the existing study NAME although weightdecay did not create it (another "
               "program's study of that name is refused otherwise); its own trials are left "
               "alone")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``weightdecay`` (all sub-commands)."""
    from .harness.spec import DEFAULT_MAX_RUNS
    from .harness.store import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL

    parser = _Parser(prog=PROG, description=(
        "Decoupled weight decay (Loshchilov & Hutter, ICLR 2019): train single runs, run "
        "sweeps stored in an Optuna study, and reproduce the paper's figures."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("train", help="train one run and print per-epoch progress")
    _add_run_config(p)
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="checkpoint file (resumed when it exists)")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write the run's metrics record as JSON to FILE")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch CPU threads, at most 1024 (default: torch's choice)")
    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)

    p = sub.add_parser("sweep", help="run a sweep spec (TOML) with local workers, or plan it "
                                     "for remote ones")
    p.add_argument("spec", nargs="?", metavar="SPEC",
                   help="sweep spec file (.toml or .json); or describe one experiment with "
                        "the grid flags below")
    _add_storage(p, required=False)
    p.add_argument("--workers", type=_workers, default=1,
                   help="local worker processes, at most 256 (0: run every trial in this "
                        "process)")
    p.add_argument("--plan-only", action="store_true",
                   help="create the study and enqueue its runs, then exit without running "
                        "any; start `weightdecay worker --storage URL --study NAME` on any "
                        "machine that reaches the store to run them (the command is printed)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="directory for the store (default storage sqlite:///DIR/store.db), "
                        "checkpoints, worker logs and trials.csv (default runs/<study>)")
    p.add_argument("--max-runs", type=_positive_int, default=DEFAULT_MAX_RUNS,
                   help=_MAX_RUNS_HELP.format(DEFAULT_MAX_RUNS))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--adopt-study", metavar="NAME", default=None, help=_ADOPT_HELP)
    g = p.add_argument_group("grid flags (one experiment, instead of SPEC)")
    g.add_argument("--name", default=None, help="experiment and default study name")
    g.add_argument("--figure", default=None, help="figure tag (fig1 ... supp3)")
    g.add_argument("--dataset", default=None, help="data set")
    g.add_argument("--model", default=None, help="network")
    g.add_argument("--optimizers", type=_names, default=None,
                   help="comma-separated optimizers (sgd,sgdw,adam,adamw)")
    g.add_argument("--lr", type=_floats, default=None, help="learning-rate grid, e.g. 2**-10,2**-9")
    g.add_argument("--weight-decay", type=_floats, default=None, help="lambda grid")
    g.add_argument("--weight-decay-norm", type=_floats, default=None, help="lambda_norm grid")
    g.add_argument("--schedules", type=_names, default=None, help="schedule grid")
    g.add_argument("--epochs", type=_ints, default=None, help="epoch-budget grid")
    g.add_argument("--seeds", type=_ints, default=None, help="seed grid")
    g.add_argument("--batch-size", type=_ints, default=None, help="batch-size grid")
    g.add_argument("--T-0", dest="T_0", type=_number, default=None,
                   help="first restart period [epochs] (restarts)")

    p = sub.add_parser("worker", help="join a sweep from any machine and run its trials")
    _add_storage(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="checkpoint directory root (default: the SQLite file's directory, "
                        "else runs/<study>)")
    p.add_argument("--max-trials", type=_non_negative_int, default=None,
                   help="stop after this many trials")
    p.add_argument("--no-wait", action="store_true",
                   help="exit when no trial is waiting (do not wait for running ones)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="torch CPU threads, at most 1024")
    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    p.add_argument("--heartbeat-interval", type=_positive_int,
                   default=DEFAULT_HEARTBEAT_INTERVAL,
                   help="seconds between heartbeats of a running trial (default: %(default)s)")
    p.add_argument("--grace-period", type=_positive_int, default=DEFAULT_GRACE_PERIOD,
                   help="seconds without a heartbeat after which a running trial is retried "
                        "(default: %(default)s)")

    p = sub.add_parser("report", help="write figures and report.html from a sweep's store")
    _add_storage(p)
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")

    p = sub.add_parser("export", help="all trials of a sweep as CSV or JSON")
    _add_storage(p)
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="output file (default: stdout)")

    p = sub.add_parser("reproduce", help="run a preset of the paper's experiments + report")
    from .harness.presets import preset_names

    p.add_argument("--preset", choices=preset_names(), required=True,
                   help="quick (Fig. 2 scored, ~7 min on 2 cores), full (every claim, "
                        "MNIST-1D, < 1 h), variants (the decay variants compared, ~20 min), "
                        "cifar10 (the paper's settings, GPUs)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="directory of the store (DIR/store.db), trials.csv and report.html; "
                        "run again to resume")
    p.add_argument("--seeds", type=_ints, default=None,
                   help="rerun the preset on these seeds, comma-separated: an experiment "
                        "planned with k seeds runs the first k; study <preset>-seeds-S1-S2-...")
    p.add_argument("--workers", type=_workers, default=2,
                   help="local worker processes, at most 256 (0: run every trial in this "
                        "process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    p.add_argument("--adopt-study", metavar="NAME", default=None, help=_ADOPT_HELP)
    return parser


# ------------------------------------------------------------------------------ checks


def _check_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as an output folder: not a file, not under a file, writable (or creatable
    in a writable folder). Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} exists and is not a directory")
    _check_writable_ancestor(path, flag)
    return path


def _check_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as an output file: not a directory, its folder usable (see _check_dir)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {str(path)!r} is not writable")
    _check_writable_ancestor(path.parent, flag, of=path)
    return path


def _check_writable_ancestor(path: Path, flag: str, of: Path | None = None) -> None:
    target = str(of if of is not None else path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {target!r} lies under {str(existing)!r}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {target!r}: {str(existing)!r} is not writable")


def _check_storage(url: str, *, must_exist: bool = False) -> None:
    from .harness.store import check_storage

    check_storage(url, must_exist=must_exist)


def _check_devices(plan: Any) -> None:
    """Runs about to be trained on this machine must name a device it has."""
    from .harness.build import check_device

    for device in sorted({run.config.device for run in plan.runs}):
        try:
            check_device(device)
        except ValueError as exc:
            raise UsageError(f"{exc} (the spec's runs are trained here; plan them for other "
                             "machines with --plan-only)") from None


def _load_data(config: Any) -> None:
    """Load (and cache) the run's data set now, so a bad one is an input error."""
    from .harness.build import get_dataset

    try:
        get_dataset(config.dataset, config.device, config.test_size)
    except (ValueError, OSError) as exc:
        raise UsageError(f"data set {config.dataset!r}: {exc}") from None


def _download_cifar10() -> None:
    from .harness.data import download_cifar10

    print(f"CIFAR-10 ready in {download_cifar10()}")


# ------------------------------------------------------------------------------ train


def _cmd_train(args: argparse.Namespace) -> int:
    from .harness import train
    from .harness.build import RunSetupError, check_device
    from .harness.checkpoint import CheckpointError, load_checkpoint
    from .harness.config import RunConfig

    fields = {name: getattr(args, name) for name in RunConfig.field_names()
              if hasattr(args, name)}
    if "weight_decay" in fields and "weight_decay_norm" in fields:
        raise UsageError("give --weight-decay or --weight-decay-norm, not both")
    if fields.get("milestones") is not None:
        fields["milestones"] = tuple(fields["milestones"])
    try:
        config = RunConfig(**fields)
        check_device(config.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _check_file(args.json, "--json")
    if args.checkpoint:
        _check_file(args.checkpoint, "--checkpoint")
        try:  # a bad checkpoint is refused before the data set is loaded (or cached)
            load_checkpoint(os.fspath(args.checkpoint), config, train.HISTORY_KEYS)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
    if args.download and config.dataset == "cifar10":
        _download_cifar10()
    _load_data(config)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def on_epoch(epoch: int, m: dict[str, Any]) -> None:
        print(f"epoch {epoch:4d}/{config.epochs}  loss {m['train_loss']:.4f}  "
              f"test error {100 * m['test_error']:6.2f}%  |theta| {m['weight_norm']:.3f}  "
              f"eta {m['eta']:.4f}  decay {m['effective_decay']:.3g}", flush=True)

    try:
        record = train.run(config, checkpoint_path=args.checkpoint, on_epoch=on_epoch)
    except (CheckpointError, RunSetupError) as exc:
        raise UsageError(str(exc)) from None
    if record["diverged"]:
        print(f"diverged after {len(record['history']['epoch'])} epochs")
    else:
        print(f"final test error {100 * record['final_test_error']:.2f}%  best "
              f"{100 * record['best_test_error']:.2f}%  final train loss "
              f"{record['final_train_loss']:.4f}  wall {record['wall_seconds']:.1f} s")
    if args.json:
        from ._io import write_atomic

        write_atomic(args.json, json.dumps({"config": config.to_dict(), **record},
                                           indent=1) + "\n")
    return 0


# ------------------------------------------------------------------------------ sweeps


_GRID_FLAGS = ("name", "figure", "dataset", "model", "optimizers", "lr", "weight_decay",
               "weight_decay_norm", "schedules", "epochs", "seeds", "batch_size", "T_0")


def _spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = [f for f in _GRID_FLAGS if getattr(args, f) is not None]
    if args.spec is not None:
        if given:
            raise UsageError(f"give a SPEC file or grid flags, not both (got {_flag(given[0])})")
        from .harness.spec import load_spec

        return load_spec(args.spec)
    if not given:
        raise UsageError("give a SPEC file or the grid flags (--optimizers, --lr, ...)")
    for flag in ("optimizers", "lr"):
        if getattr(args, flag) is None:
            raise UsageError(f"--{flag} is required without a SPEC file")
    if args.weight_decay is not None and args.weight_decay_norm is not None:
        raise UsageError("give --weight-decay or --weight-decay-norm, not both")
    name = args.name or "sweep"
    entry_decay: dict[str, Any]
    if args.weight_decay_norm is not None:
        entry_decay = {"weight_decay_norm": args.weight_decay_norm}
    else:
        entry_decay = {"weight_decay": args.weight_decay if args.weight_decay else [0.0]}
    exp: dict[str, Any] = {
        "name": name,
        "optimizers": [{"optimizer": o, "lr": args.lr, **entry_decay} for o in args.optimizers],
    }
    for flag in ("figure", "dataset", "model", "schedules", "epochs", "seeds", "batch_size",
                 "T_0"):
        if getattr(args, flag) is not None:
            exp[flag] = getattr(args, flag)
    return {"name": name, "experiments": [exp]}


def _worker_command(storage: str, study: str, out: Path | None) -> str:
    import shlex

    from .harness.store import describe_url

    shown = describe_url(storage)
    cmd = f"{PROG} worker --storage {shlex.quote(shown)} --study {shlex.quote(study)}"
    if out is not None:
        cmd += f" --out {shlex.quote(str(out))}"
    return cmd + ("  (password hidden)" if shown != storage else "")


def _summary(records: list[dict[str, Any]]) -> None:
    """The sweep's summary table and its failed runs, on stderr."""
    from .report.tables import failure_lines, summary_table

    print(summary_table(records), file=sys.stderr, flush=True)
    for line in failure_lines(records):
        print(line, file=sys.stderr, flush=True)


def _exit_code(records: list[dict[str, Any]], out: Path, rerun: str) -> int:
    """0 if every run completed, else 1 with one line that says so."""
    done = sum(1 for r in records if r["state"] == "COMPLETE")
    if done == len(records):
        return 0
    failed = sum(1 for r in records if r["state"] == "FAIL")
    print(f"{PROG}: {len(records) - done} of {len(records)} runs did not complete ({failed} "
          f"failed; errors above, worker logs in {out / 'logs'}); {rerun}", file=sys.stderr)
    return 1


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .harness.local import enqueue_progress, run_local
    from .harness.spec import check_study_name, plan_sweep
    from .harness.store import export_trials, sqlite_url
    from .harness.study import create_sweep

    plan = plan_sweep(_spec_from_flags(args), max_runs=args.max_runs)
    study = args.study or plan.name
    if not study:
        raise UsageError("the spec has no 'name'; give --study NAME")
    check_study_name(study)
    out = _check_dir(args.out if args.out else Path("runs") / study, "--out")
    if args.storage:
        _check_storage(args.storage)
    storage = args.storage or sqlite_url(out / "store.db", root=out)  # in --out, checked
    if args.plan_only:
        if not args.storage:
            out.mkdir(parents=True, exist_ok=True)
        result = create_sweep(plan, storage, study, progress=enqueue_progress(),
                              adopt_study=args.adopt_study)
        print(f"sweep {study!r}: {len(result.runs)} runs planned, {result.enqueued} enqueued; "
              "none run here. Run them with (on any machine that reaches the store):")
        print(_worker_command(storage, study, out if args.out else None))
        return 0
    _check_devices(plan)
    out.mkdir(parents=True, exist_ok=True)
    records = run_local(plan, storage, study, workers=args.workers, out_dir=out,
                        progress=not args.no_progress, adopt_study=args.adopt_study)
    _summary(records)
    path = out / "trials.csv"
    export_trials(storage, study, "csv", path, root=out)
    print(f"trials: {path}", flush=True)
    return _exit_code(records, out, "run the same command again to retry them")


def _cmd_worker(args: argparse.Namespace) -> int:
    from .harness.store import sqlite_path
    from .harness.worker import default_out_dir, run_worker

    _check_storage(args.storage, must_exist=sqlite_path(args.storage) is not None)
    out = _check_dir(args.out if args.out else default_out_dir(args.storage, args.study),
                     "--out")
    if args.download:
        _download_cifar10()
    result = run_worker(args.storage, args.study, out_dir=out, max_trials=args.max_trials,
                        wait=not args.no_wait, threads=args.threads,
                        heartbeat_interval=args.heartbeat_interval,
                        grace_period=args.grace_period)
    print(f"worker ran {result.ran} trial(s): {result.completed} complete, {result.failed} "
          f"failed, {result.lost} taken over by other workers")
    return 1 if result.failed else 0


def _write_report(storage: str, study: str, out: Path,
                  original_study: str | None = None) -> Path | None:
    """report.html (scorecard first) from the store; prints one line per scored claim.

    ``original_study``: a study of the same design on other seeds in the same storage (a
    replication's original); the report then says which verdicts replicated.
    """
    from .harness.store import load_records, load_spec_attrs, study_names

    records = load_records(storage, study)
    attrs = load_spec_attrs(storage, study)
    try:
        from .report import scorecard, write_report
    except ImportError as exc:
        print(f"{PROG}: warning: no report written ({exc})", file=sys.stderr)
        return None
    original = None
    if original_study is not None:
        if original_study in study_names(storage):
            claims = scorecard(load_records(storage, original_study))
            original = {"scorecard": [c.to_dict() for c in claims]}
        else:
            print(f"{PROG}: note: no study {original_study!r} in this store to compare the "
                  "verdicts with (run the preset on its own seeds into the same --out first)",
                  file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    path = write_report(records, out, spec=attrs.get("spec"), versions=attrs.get("versions"),
                        original=original)
    stats_path = out / "stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
    for c in stats.get("scorecard", []):
        if c["verdict"] != "not run":
            print(f"[{c['verdict']:>12}] {c['source']}: {c['claim']} — {c['estimate_text']}")
    rep = stats.get("replication")
    if rep:
        print(f"replication: {rep['replicated']} of {rep['compared']} verdicts as on the "
              f"original seeds" + (f"; differ: {', '.join(rep['differ'])}" if rep["differ"]
                                   else "")
              + f"; slope readings: {rep.get('readings_same', 0)} of "
                f"{rep.get('readings_compared', 0)} the same")
    return path


def _cmd_report(args: argparse.Namespace) -> int:
    _check_storage(args.storage, must_exist=True)
    out = _check_dir(args.out, "--out")
    path = _write_report(args.storage, args.study, out)
    if path is not None:
        print(f"report: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .harness.store import export_trials

    _check_storage(args.storage, must_exist=True)
    if args.output is not None:
        _check_file(args.output, "-o")
    text = export_trials(args.storage, args.study, args.format, args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _complete(storage: str, study: str) -> int:
    """Completed runs of ``study`` in ``storage`` (0 when either does not exist yet)."""
    from .harness.store import StoreError, sqlite_path, study_names
    from .harness.study import sweep_status

    path = sqlite_path(storage)
    if path is not None and not path.exists():
        return 0
    try:
        if study not in study_names(storage):
            return 0
        return sweep_status(storage, study)["complete"]
    except StoreError:
        return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import time

    from ._io import write_atomic
    from .harness.local import run_local
    from .harness.presets import get_preset
    from .harness.spec import plan_sweep, with_seeds
    from .harness.store import export_trials, sqlite_url

    started = time.perf_counter()
    spec = get_preset(args.preset)
    plan = (plan_sweep(spec, max_runs=None) if args.seeds is None
            else with_seeds(spec, args.seeds))
    study = plan.name or args.preset  # every preset names itself
    root = _check_dir(args.out, "--out")
    # a replication on other seeds shares the store but writes its files beside it
    out = root if args.seeds is None else root / study
    _check_devices(plan)
    if args.download and args.preset == "cifar10":
        _download_cifar10()
    out.mkdir(parents=True, exist_ok=True)
    storage = sqlite_url(root / "store.db", root=root)
    done_before = _complete(storage, study)
    records = run_local(plan, storage, study, workers=args.workers, out_dir=out, root=root,
                        progress=not args.no_progress, adopt_study=args.adopt_study)
    _summary(records)
    export_trials(storage, study, "csv", out / "trials.csv", root=root)
    print(f"trials: {out / 'trials.csv'}")
    path = _write_report(storage, study, out,
                         original_study=None if args.seeds is None else spec["name"])
    if path is not None:
        print(f"report: {path}")
    wall = time.perf_counter() - started
    complete = sum(r.get("state") == "COMPLETE" for r in records)
    print(f"reproduce: {complete - done_before} of {len(records)} runs run now, "
          f"{wall / 60:.1f} min wall")
    if complete > done_before:  # the wall time of a run that trained (sweep + report)
        write_atomic(out / "reproduce.json", json.dumps({
            "preset": args.preset, "study": study, "runs": len(records),
            "ran": complete - done_before, "complete": complete, "workers": args.workers,
            "cpu_count": os.cpu_count(), "wall_seconds": round(wall, 1)}, indent=1) + "\n",
            root=root)
    return _exit_code(records, out, "run the same command again to resume")


_COMMANDS = {
    "train": _cmd_train,
    "sweep": _cmd_sweep,
    "worker": _cmd_worker,
    "report": _cmd_report,
    "export": _cmd_export,
    "reproduce": _cmd_reproduce,
}


# The ``harness`` extra of pyproject.toml, as import names. Every command runs the harness; a
# core install (torch + numpy: the library only) has none of these, and is told so in one line.
HARNESS_MODULES = ("optuna", "sqlalchemy", "mnist1d", "sklearn", "scipy", "matplotlib", "tqdm")


def _check_harness_installed(command: str) -> None:
    """UsageError naming the first missing module of the harness extra (nothing imported)."""
    import importlib.util

    for name in HARNESS_MODULES:
        if importlib.util.find_spec(name) is None:
            raise UsageError(f"'{command}' needs {name} (the harness extra), which is not "
                             "installed: pip install 'weightdecay[harness]'")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``weightdecay`` command line; return the exit code (2: bad input; 130 / 143:
    stopped by SIGINT / SIGTERM, after handing back what was running)."""
    from ._io import UnsafePathError
    from .harness.interrupt import stop_on_signals
    from .harness.spec import SpecError
    from .harness.store import StoreError

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_harness_installed(args.command)  # before any work: nothing is written
        with stop_on_signals():
            return _COMMANDS[args.command](args)
    except (UsageError, SpecError, StoreError, UnsafePathError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM (harness.interrupt.Interrupted)
        print(f"{PROG}: {_one_line(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:  # e.g. `weightdecay export ... | head`
        return 0
    except OSError as exc:  # the environment failed (disk full, a file vanished): one line
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

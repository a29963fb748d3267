"""The ``weightdecay`` command line: train, sweep, worker, report, export, reproduce.

::

    weightdecay train --optimizer adamw --lr 0.001 --weight-decay 0.001 --epochs 10
    weightdecay sweep examples/fig2_small.toml --workers 2 --out runs/fig2
    weightdecay worker --storage postgresql+psycopg2://user@host/db --study fig2
    weightdecay report --storage sqlite:///runs/fig2/store.db --study fig2 --out runs/fig2
    weightdecay export --storage sqlite:///runs/fig2/store.db --study fig2 --format csv
    weightdecay reproduce --preset quick --out runs/quick --workers 2

Bad input (unknown names, impossible grids, unknown spec keys, malformed or unreachable
storage URLs) prints ONE line ``weightdecay: error: ...`` on stderr and exits with code 2,
before anything is written to the store.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

PROG = "weightdecay"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``weightdecay: error: ...``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _floats(text: str) -> list[float]:
    """Comma-separated numbers, e.g. ``0.001,0.002`` or ``2**-10,2**-9``."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "**" in part:
                base, exp = part.split("**", 1)
                value = float(base) ** float(exp)
            else:
                value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {part!r}") from None
        out.append(value)
    return out


def _ints(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") \
            from None


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_storage(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--storage", required=required, metavar="URL",
                   help="SQLAlchemy URL of the store, e.g. sqlite:///runs/x/store.db or "
                        "postgresql+psycopg2://user:pass@host/db")
    p.add_argument("--study", required=required, metavar="NAME",
                   help="name of the sweep's Optuna study")


def _add_run_config(p: argparse.ArgumentParser) -> None:
    from .harness.config import DATASETS, DECAY_CONVENTIONS, MODELS, OPTIMIZERS, SCHEDULES

    p.add_argument("--dataset", choices=DATASETS, default="mnist1d", help="data set")
    p.add_argument("--model", choices=MODELS, default="cnn1d_bn", help="network")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                   help="sgd/adam: L2 added to the gradient; sgdw/adamw: decoupled decay")
    p.add_argument("--lr", type=float, default=1e-3, help="base learning rate alpha (> 0)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="raw lambda per update (times eta_t, NOT times alpha); the L2 "
                        "coefficient for sgd/adam")
    p.add_argument("--weight-decay-norm", type=float, default=None,
                   help="normalized lambda_norm (paper App. B.1); overrides --weight-decay")
    p.add_argument("--decay-convention", choices=DECAY_CONVENTIONS, default="schedule",
                   help="what lambda is multiplied by per update (paper: schedule = eta_t)")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="eta_t schedule")
    p.add_argument("--T-0", dest="T_0", type=float, default=None,
                   help="first restart period in epochs (schedule=restarts)")
    p.add_argument("--T-mult", dest="T_mult", type=float, default=2.0,
                   help="restart period growth factor (>= 1)")
    p.add_argument("--milestones", type=_floats, default=None,
                   help="step-drop epochs, comma-separated (default 30/60/80%% of epochs)")
    p.add_argument("--drop-factor", type=float, default=0.1,
                   help="multiplier at each step-drop milestone")
    p.add_argument("--epochs", type=int, default=10, help="training epochs")
    p.add_argument("--batch-size", type=int, default=128, help="examples per update")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--momentum", type=float, default=0.9,
                   help="SGD momentum / Adam beta1")
    p.add_argument("--no-decay-all", dest="decay_all", action="store_false",
                   help="exempt biases and 1-D tensors from decay (the paper decays all)")
    p.add_argument("--width", type=int, default=None,
                   help="model width (channels / hidden units; default: the model's own)")
    p.add_argument("--test-size", type=int, default=None,
                   help="mnist1d: N held-out test signals from the generator instead of the "
                        "canonical 1000")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate the test error every N epochs (and after the last)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``weightdecay`` (all sub-commands)."""
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
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")

    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    p = sub.add_parser("sweep", help="run a sweep spec (TOML) with local workers")
    p.add_argument("spec", nargs="?", metavar="SPEC",
                   help="sweep spec file (.toml or .json); or describe one experiment with "
                        "the grid flags below")
    _add_storage(p, required=False)
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="local worker processes (0: run in this process)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="directory for the store (default storage sqlite:///DIR/store.db), "
                        "checkpoints and trials.csv (default runs/<study>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    g.add_argument("--T-0", dest="T_0", type=float, default=None,
                   help="first restart period [epochs] (restarts)")

    p = sub.add_parser("worker", help="join a sweep from any machine and run its trials")
    _add_storage(p)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="checkpoint directory root (default: the SQLite file's directory, "
                        "else runs/<study>)")
    p.add_argument("--max-trials", type=_positive_int, default=None,
                   help="stop after this many trials")
    p.add_argument("--no-wait", action="store_true",
                   help="exit when no trial is waiting (do not wait for running ones)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    p.add_argument("--heartbeat-interval", type=int, default=None,
                   help="seconds between heartbeats of a running trial")
    p.add_argument("--grace-period", type=int, default=None,
                   help="seconds of silence after which a trial is retried")

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
                   help="quick (Fig. 2, minutes on a laptop), full (every figure, MNIST-1D), "
                        "cifar10 (the paper's settings, GPUs)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="directory of the store (DIR/store.db), trials.csv and report.html; "
                        "run again to resume")
    p.add_argument("--workers", type=_positive_int, default=2, help="local worker processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--download", action="store_true", help=_DOWNLOAD_HELP)
    return parser


# ------------------------------------------------------------------------------ commands


_DOWNLOAD_HELP = ("fetch CIFAR-10 (the official archive, md5-checked) into the cache "
                  "(~/.cache/weightdecay or $WEIGHTDECAY_CACHE) first, if it is missing")


def _download_cifar10() -> None:
    from .harness.data import download_cifar10

    print(f"CIFAR-10 ready in {download_cifar10()}")


def _cmd_train(args: argparse.Namespace) -> int:
    from .harness import train
    from .harness.config import RunConfig

    fields = {name: getattr(args, name) for name in RunConfig.field_names()}
    if fields["milestones"] is not None:
        fields["milestones"] = tuple(fields["milestones"])
    try:
        config = RunConfig(**fields)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.download and config.dataset == "cifar10":
        _download_cifar10()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def on_epoch(epoch: int, m: dict[str, Any]) -> None:
        print(f"epoch {epoch:4d}/{config.epochs}  loss {m['train_loss']:.4f}  "
              f"test error {100 * m['test_error']:6.2f}%  |theta| {m['weight_norm']:.3f}  "
              f"eta {m['eta']:.4f}  decay {m['effective_decay']:.3g}", flush=True)

    record = train.run(config, checkpoint_path=args.checkpoint, on_epoch=on_epoch)
    if record["diverged"]:
        print(f"diverged after {len(record['history']['epoch'])} epochs")
    else:
        print(f"final test error {100 * record['final_test_error']:.2f}%  best "
              f"{100 * record['best_test_error']:.2f}%  final train loss "
              f"{record['final_train_loss']:.4f}  wall {record['wall_seconds']:.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": config.to_dict(), **record},
                                              indent=1) + "\n")
    return 0


_GRID_FLAGS = ("name", "figure", "dataset", "model", "optimizers", "lr", "weight_decay",
               "weight_decay_norm", "schedules", "epochs", "seeds", "batch_size", "T_0")


def _spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = [f for f in _GRID_FLAGS if getattr(args, f) is not None]
    if args.spec is not None:
        if given:
            raise UsageError(f"give a SPEC file or grid flags, not both (got --{given[0]})")
        from .harness.sweep import load_spec

        return load_spec(args.spec)
    if not given:
        raise UsageError("give a SPEC file or the grid flags (--optimizers, --lr, ...)")
    for flag in ("optimizers", "lr"):
        if getattr(args, flag) is None:
            raise UsageError(f"--{flag} is required without a SPEC file")
    name = args.name or "sweep"
    entry_decay: dict[str, Any]
    if args.weight_decay_norm is not None:
        entry_decay = {"weight_decay_norm": args.weight_decay_norm}
    else:
        entry_decay = {"weight_decay": args.weight_decay if args.weight_decay else [0.0]}
    if args.weight_decay is not None and args.weight_decay_norm is not None:
        raise UsageError("give --weight-decay or --weight-decay-norm, not both")
    exp: dict[str, Any] = {
        "name": name,
        "optimizers": [{"optimizer": o, "lr": args.lr, **entry_decay} for o in args.optimizers],
    }
    for flag in ("figure", "dataset", "model", "schedules", "epochs", "seeds", "batch_size",
                 "T_0"):
        if getattr(args, flag) is not None:
            exp[flag] = getattr(args, flag)
    return {"name": name, "experiments": [exp]}


def _resolve_out_and_storage(args: argparse.Namespace, study: str) -> tuple[Path, str]:
    from .harness.store import check_storage, sqlite_url

    out = Path(args.out) if args.out else Path("runs") / study
    if args.storage:
        check_storage(args.storage)
        storage = args.storage
    else:
        storage = sqlite_url(out / "store.db")
    return out, storage


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .harness.store import export_trials
    from .harness.sweep import run_local, validate_spec

    spec = validate_spec(_spec_from_flags(args))
    study = args.study or spec.get("name")
    if not study:
        raise UsageError("the spec has no 'name'; give --study NAME")
    out, storage = _resolve_out_and_storage(args, study)
    out.mkdir(parents=True, exist_ok=True)
    run_local(spec, storage, study, workers=args.workers, out_dir=out,
              progress=not args.no_progress)
    path = out / "trials.csv"
    export_trials(storage, study, "csv", path)
    print(f"trials: {path}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from .harness import store
    from .harness.sweep import run_worker

    store.check_storage(args.storage)
    if args.download:
        _download_cifar10()
    kwargs: dict[str, Any] = {}
    if args.heartbeat_interval is not None:
        kwargs["heartbeat_interval"] = args.heartbeat_interval
    if args.grace_period is not None:
        kwargs["grace_period"] = args.grace_period
    n = run_worker(args.storage, args.study, out_dir=args.out, max_trials=args.max_trials,
                   wait=not args.no_wait, threads=args.threads, **kwargs)
    print(f"worker ran {n} trial(s)")
    return 0


def _write_report(storage: str, study: str, out: Path) -> Path | None:
    from .harness.store import load_records, load_spec_attrs

    records = load_records(storage, study)
    attrs = load_spec_attrs(storage, study)
    try:
        from .report import write_report
    except ImportError as exc:
        print(f"{PROG}: warning: no report written ({exc})", file=sys.stderr)
        return None
    return write_report(records, out, spec=attrs.get("spec"), versions=attrs.get("versions"))


def _cmd_report(args: argparse.Namespace) -> int:
    from .harness.store import check_storage

    check_storage(args.storage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = _write_report(args.storage, args.study, out)
    if path is not None:
        print(f"report: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .harness.store import check_storage, export_trials

    check_storage(args.storage)
    text = export_trials(args.storage, args.study, args.format, args.output)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .harness.presets import get_preset
    from .harness.store import export_trials, sqlite_url
    from .harness.sweep import run_local

    spec = get_preset(args.preset)
    if args.download and args.preset == "cifar10":
        _download_cifar10()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = sqlite_url(out / "store.db")
    study = spec["name"]
    records = run_local(spec, storage, study, workers=args.workers, out_dir=out,
                        progress=not args.no_progress)
    export_trials(storage, study, "csv", out / "trials.csv")
    print(f"trials: {out / 'trials.csv'}")
    done = sum(1 for r in records if r["state"] == "COMPLETE")
    path = _write_report(storage, study, out)
    if path is not None:
        print(f"report: {path}")
    if done < len(records):
        print(f"{PROG}: warning: {len(records) - done} of {len(records)} runs did not complete;"
              " run the same command again to resume", file=sys.stderr)
        return 1
    return 0


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


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``weightdecay`` command line; return the exit code (2: bad input)."""
    from .harness.store import StoreError
    from .harness.sweep import SpecError

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_harness_installed(args.command)  # before any work: nothing is written
        return _COMMANDS[args.command](args)
    except (UsageError, SpecError, StoreError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `weightdecay export ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The experiments from Python: train, sweep, worker, export, report and reproduce.

Each function is one ``weightdecay`` command (the command line parses its flags and calls
it), checks its input the way the command does, and returns a result object instead of
printing one::

    from weightdecay import api

    outcome = api.sweep("examples/fig2_small.toml", workers=2, out="runs/fig2_small")
    report = api.report(outcome.storage, outcome.study, out="runs/fig2_small")
    for claim in report.scorecard:
        print(claim.line())

This module sits above the harness (plan, store, workers) and the report (the
:class:`~weightdecay.report.model.Report` and its views); the harness knows nothing of the
report. :func:`reproduce` orchestrates plan -> run -> Report -> ``stats.json``, the Report's
serialization. Bad input raises :class:`InputError`,
:class:`~weightdecay.harness.spec.SpecError` or
:class:`~weightdecay.harness.store.StoreError` (all ``ValueError``) before anything is
written; every file written lies under the folder or file named.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._io import write_atomic
from .harness.spec import DEFAULT_MAX_RUNS
from .harness.store import DEFAULT_GRACE_PERIOD, DEFAULT_HEARTBEAT_INTERVAL

if TYPE_CHECKING:  # the harness and the report load optuna, torch, matplotlib when used
    from .harness.config import RunConfig
    from .harness.spec import SweepPlan
    from .harness.worker import WorkerResult
    from .report.model import Report, Timing

__all__ = ["HARNESS_MODULES", "InputError", "ReproduceOutcome", "SweepOutcome",
           "check_output_dir", "check_output_file", "export", "missing_harness_module",
           "report", "reproduce", "sweep", "train", "worker", "write_report"]

#: the ``harness`` extra of pyproject.toml, as import names: a core install (torch + numpy,
#: the library only) has none of them, and cannot run the experiments
HARNESS_MODULES = ("optuna", "sqlalchemy", "mnist1d", "sklearn", "scipy", "matplotlib", "tqdm")


def missing_harness_module() -> str | None:
    """The first module of the harness extra that is not installed (None: all are); nothing
    is imported."""
    import importlib.util

    return next((m for m in HARNESS_MODULES if importlib.util.find_spec(m) is None), None)


class InputError(ValueError):
    """Bad input to an entry point (an output path, a device, a data set): nothing was
    written. The command line reports it as one line, exit code 2."""


# ------------------------------------------------------------------------------ checks


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as an output folder: not a file, not under a file, writable (or creatable in
    a writable folder). Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} exists and is not a directory")
    _check_writable_ancestor(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as an output file: not a directory, its folder usable (see
    :func:`check_output_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {str(path)!r} is not writable")
    _check_writable_ancestor(path.parent, what, of=path)
    return path


def _check_writable_ancestor(path: Path, what: str, of: Path | None = None) -> None:
    target = str(of if of is not None else path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {target!r} lies under {str(existing)!r}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {target!r}: {str(existing)!r} is not writable")


def _check_devices(plan: SweepPlan) -> None:
    """Runs about to be trained on this machine must name a device it has."""
    from .harness.build import check_device

    for device in sorted({run.config.device for run in plan.runs}):
        try:
            check_device(device)
        except ValueError as exc:
            raise InputError(f"{exc} (the spec's runs are trained here; plan them for other "
                             "machines with --plan-only)") from None


def _download_cifar10() -> None:
    from .harness.cifar10 import download_cifar10

    print(f"CIFAR-10 ready in {download_cifar10()}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ one run


def train(config: RunConfig | Mapping[str, Any], *, checkpoint: str | os.PathLike | None = None,
          download: bool = False, threads: int | None = None,
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
          json_path: str | os.PathLike | None = None,
          allow_modules: Sequence[str] = ()) -> dict[str, Any]:
    """Train one run (:func:`weightdecay.harness.train.run`) and return its record, with the
    run's ``"config"`` (also written as JSON to ``json_path``, atomically, when given).

    Before training: the config and its device are checked, a ``checkpoint`` that exists
    must be this run's (it is resumed), ``download`` fetches CIFAR-10 first, and the data
    set is loaded (a bad one is an :class:`InputError`). ``threads``: torch CPU threads. A
    model or data set ``"package.module:function"`` is imported only when its module is in
    ``allow_modules`` (from the working directory first); the run records the hash of its
    source (``source_hash``; a value given must be that of the code imported).
    """
    from .harness.build import check_device
    from .harness.config import RunConfig
    from .harness.usercode import check_modules, module_path, user_modules
    from .registry import module_allowed, source_hash

    try:
        config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
        check_device(config.device)
        allow = check_modules(allow_modules)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    user = user_modules([config])
    refused = [m for m in user if not module_allowed(m, allow)]
    if refused:
        raise InputError(f"the run names user code of module {refused[0]!r}, which is not "
                         f"allowed: allow it with --allow-module {refused[0]}")
    if not user:
        return _train(config, checkpoint, download, threads, on_epoch, json_path)
    with module_path(os.getcwd()):
        try:
            code = source_hash(config.model, config.dataset)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if config.source_hash not in (None, code):
            raise InputError(f"source_hash={config.source_hash!r} is not that of the code "
                             f"imported now ({code}): the module changed since")
        return _train(config.replace(source_hash=code), checkpoint, download, threads,
                      on_epoch, json_path)


def _train(config: RunConfig, checkpoint: str | os.PathLike | None, download: bool,
           threads: int | None, on_epoch: Callable[[int, dict[str, Any]], None] | None,
           json_path: str | os.PathLike | None) -> dict[str, Any]:
    from .harness import train as harness_train
    from .harness.build import get_dataset
    from .harness.checkpoint import load_checkpoint
    from .harness.usercode import check_configs

    if json_path is not None:
        check_output_file(json_path, "--json")
    if checkpoint is not None:
        check_output_file(checkpoint, "checkpoint")
        # a bad checkpoint is refused (CheckpointError) before the data set is loaded
        load_checkpoint(os.fspath(checkpoint), config, harness_train.HISTORY_KEYS)
    if download and config.dataset == "cifar10":
        _download_cifar10()
    try:
        check_configs([config])
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        get_dataset(config.dataset, config.device, config.test_size)
    except (ValueError, OSError) as exc:
        raise InputError(f"data set {config.dataset!r}: {exc}") from None
    if threads:
        import torch

        torch.set_num_threads(threads)
    record = {"config": config.to_dict(),
              **harness_train.run(config, checkpoint_path=checkpoint, on_epoch=on_epoch)}
    if json_path is not None:
        write_atomic(json_path, json.dumps(record, indent=1) + "\n")
    return record


# ------------------------------------------------------------------------------ sweeps


class _Runs:
    """How the runs of an outcome's ``records`` ended."""

    records: list[dict[str, Any]]

    @property
    def complete(self) -> int:
        return sum(1 for r in self.records if r.get("state") == "COMPLETE")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.get("state") == "FAIL")

    @property
    def done(self) -> bool:
        """Every run completed (diverged runs count: they are results)."""
        return self.complete == len(self.records)


@dataclass
class SweepOutcome(_Runs):
    """What :func:`sweep` did: where the study is, its plan, and its runs' records (none
    when it only planned them; ``enqueued`` counts the runs it put in the queue then)."""

    study: str
    storage: str
    out: Path
    plan: SweepPlan
    records: list[dict[str, Any]]
    planned_only: bool = False
    enqueued: int = 0

    @property
    def done(self) -> bool:
        """Every planned run completed (diverged runs count: they are results)."""
        return not self.planned_only and super().done

    def bracket_note(self) -> str:
        """For a planned sweep whose bands grow (``extend``): how their bracketing cells get
        enqueued ("" otherwise)."""
        from .harness.spec import band_extends

        if not band_extends(self.plan.spec):
            return ""
        return ("\nIts bands grow where a row's optimum sits on their edge: once the workers "
                "are done, run this command again to enqueue those cells, until it enqueues 0.")

    def worker_command(self, out: bool = True) -> str:
        """The command that runs this sweep's trials on another machine (a password in the
        storage URL hidden); ``out``: with ``--out``."""
        import shlex

        from .harness.store import describe_url

        shown = describe_url(self.storage)
        cmd = (f"weightdecay worker --storage {shlex.quote(shown)} "
               f"--study {shlex.quote(self.study)}")
        if out:
            cmd += f" --out {shlex.quote(str(self.out))}"
        return cmd + ("  (password hidden)" if shown != self.storage else "")


def _plan(spec: Any, max_runs: int | None) -> SweepPlan:
    from .harness.spec import SweepPlan, load_spec, plan_sweep

    if isinstance(spec, SweepPlan):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    return plan_sweep(spec, max_runs=max_runs)


def sweep(spec: Mapping[str, Any] | str | os.PathLike | SweepPlan, *,
          storage: str | None = None, study: str | None = None,
          out: str | os.PathLike | None = None, workers: int = 1, plan_only: bool = False,
          max_runs: int | None = DEFAULT_MAX_RUNS, progress: bool = True,
          stream: TextIO | None = None, adopt_study: str | None = None) -> SweepOutcome:
    """Plan a sweep spec (a dict, a TOML/JSON file or a plan) into its study and run it with
    ``workers`` local processes (0: in this process), or with ``plan_only`` only enqueue its
    runs for ``weightdecay worker`` on other machines.

    ``study`` defaults to the spec's name, ``out`` to ``runs/<study>`` (checkpoints, worker
    logs, ``trials.csv``), ``storage`` to ``sqlite:///<out>/store.db``. Progress goes to
    ``stream`` (stderr). Run again, it resumes; finished runs never run twice. An existing
    Optuna study of that name that weightdecay did not create is refused unless
    ``adopt_study`` names it. SIGINT / SIGTERM stop the workers and hand their running
    trials back (:mod:`weightdecay.harness.interrupt`).

    User code: a model or data set ``"package.module:function"`` is imported from the
    spec's folder first (a dict spec's: the working directory), and its workers may import
    the modules the spec names, no other; before anything trains, each user model and data
    set is loaded and tried on two inputs (:class:`InputError` otherwise). A study holding
    runs of another version of that code is refused.
    """
    from .harness.usercode import module_path

    folder = Path(spec).parent if isinstance(spec, (str, os.PathLike)) else Path.cwd()
    with module_path(folder):
        return _sweep(_plan(spec, max_runs), folder, storage, study, out, workers, plan_only,
                      progress, stream, adopt_study)


def _sweep(plan: SweepPlan, folder: Path, storage: str | None, study: str | None,
           out: str | os.PathLike | None, workers: int, plan_only: bool, progress: bool,
           stream: TextIO | None, adopt_study: str | None) -> SweepOutcome:
    from .harness.local import enqueue_progress, grown, run_local
    from .harness.spec import band_extends, check_study_name
    from .harness.store import check_storage, export_trials, load_records, sqlite_url
    from .harness.study import create_sweep
    from .harness.usercode import check_configs, check_same_code, user_modules

    study = study or plan.name
    if not study:
        raise InputError("the spec has no 'name'; give a study name (--study NAME)")
    check_study_name(study)
    out_dir = check_output_dir(out if out is not None else Path("runs") / study)
    if storage:
        check_storage(storage)
    url = storage or sqlite_url(out_dir / "store.db", root=out_dir)
    configs = [run.config for run in plan.runs]
    check_same_code(configs, url, study)
    if plan_only:
        if not storage:
            out_dir.mkdir(parents=True, exist_ok=True)
        made = create_sweep(plan, url, study, progress=enqueue_progress(stream),
                            adopt_study=adopt_study)
        enqueued = made.enqueued
        if band_extends(plan.spec):  # the cells that bracket the optima of rows already run
            more = grown(plan, load_records(url, study))
            if len(more.runs) > len(plan.runs):
                plan, enqueued = more, enqueued + create_sweep(more, url, study).enqueued
        return SweepOutcome(study, url, out_dir, plan, [], planned_only=True,
                            enqueued=enqueued)
    _check_devices(plan)
    try:
        check_configs(configs)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    records = run_local(plan, url, study, workers=workers, out_dir=out_dir, progress=progress,
                        stream=stream, adopt_study=adopt_study,
                        allow_modules=user_modules(configs), module_paths=[folder.resolve()])
    export_trials(url, study, "csv", out_dir / "trials.csv", root=out_dir)
    return SweepOutcome(study, url, out_dir, plan, records)


def worker(storage: str, study: str, *, out: str | os.PathLike | None = None,
           max_trials: int | None = None, wait: bool = True, threads: int | None = None,
           download: bool = False, heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
           grace_period: int = DEFAULT_GRACE_PERIOD,
           allow_modules: Sequence[str] = ()) -> WorkerResult:
    """Join the sweep ``study`` in ``storage`` from this machine and run its waiting trials
    (:func:`weightdecay.harness.worker.run_worker`); checkpoints under ``out`` (default: the
    SQLite file's folder, else ``runs/<study>``). ``allow_modules``: the user code it may
    import, from the working directory and ``PYTHONPATH`` (trials of other modules are
    left to other workers)."""
    from .harness.store import check_storage, sqlite_path
    from .harness.usercode import check_modules
    from .harness.worker import default_out_dir, run_worker

    check_storage(storage, must_exist=sqlite_path(storage) is not None)
    out_dir = check_output_dir(out if out is not None else default_out_dir(storage, study))
    try:
        allow = check_modules(allow_modules)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if download:
        _download_cifar10()
    return run_worker(storage, study, out_dir=out_dir, max_trials=max_trials, wait=wait,
                      threads=threads, heartbeat_interval=heartbeat_interval,
                      grace_period=grace_period, allow_modules=allow)


def export(storage: str, study: str, fmt: str = "csv",
           path: str | os.PathLike | None = None) -> str:
    """Every trial of ``study`` as CSV or JSON text (:func:`weightdecay.harness.store.
    export_trials`), also written to ``path`` when given."""
    from .harness.store import check_storage, export_trials

    check_storage(storage, must_exist=True)
    if path is not None:
        check_output_file(path)
    return export_trials(storage, study, fmt, path)


# ------------------------------------------------------------------------------ reports


def _write_stats(rep: Report, out: Path, root: str | os.PathLike | None = None) -> Path:
    """``out/stats.json``: the Report's serialization (never through a link out of ``root``,
    default ``out``)."""
    return write_atomic(out / "stats.json", json.dumps(rep.to_dict(), indent=2, default=str),
                        root=out if root is None else root)


def _write_views(rep: Report, out: Path, root: str | os.PathLike | None = None) -> Path:
    """report.html (its figures embedded, and beside it) and stats.json in ``out``; every
    destination is checked against ``root`` (default ``out``) before anything is written."""
    from ._io import check_inside
    from .report.html import write_html

    check_inside(out / "stats.json", out if root is None else root)
    path = write_html(rep, out, root=root)
    _write_stats(rep, out, root)
    return path


def write_report(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                 spec: Any = None, versions: Mapping[str, Any] | None = None, *,
                 title: str = "weightdecay report", n_boot: int | None = None,
                 original: Mapping[str, Any] | None = None) -> Path:
    """Build the :class:`~weightdecay.report.model.Report` of ``records`` and write
    ``out_dir/report.html`` (figures beside it) and ``out_dir/stats.json``.

    Args:
        records: trial records (``weightdecay.harness.store.load_records``).
        out_dir: folder for the files; created if needed.
        spec, versions: the sweep spec and the software versions stored with the study.
        title: the page's title.
        n_boot: bootstrap replicates of every interval (default 2000).
        original: the scorecard of the same design on other seeds (``stats.json`` content or
            a results file): the report then says which verdicts replicated.

    Returns:
        The path of ``report.html``.
    """
    from .report.model import build_report
    from .report.resample import DEFAULT_REPLICATES

    rep = build_report(records, spec=spec, versions=versions, original=original, title=title,
                       n_boot=n_boot or DEFAULT_REPLICATES)
    return _write_views(rep, Path(out_dir))


def report(storage: str, study: str, out: str | os.PathLike | None = None, *,
           original_study: str | None = None, title: str | None = None,
           n_boot: int | None = None, root: str | os.PathLike | None = None) -> Report:
    """The :class:`~weightdecay.report.model.Report` of the study ``study``; with ``out``,
    also ``out/report.html`` (its figures embedded, and as PNGs beside it) and
    ``out/stats.json``, none of them through a symbolic link that leads out of ``root``
    (default ``out``).

    ``original_study``: a study of the same design on other seeds in the same storage (a
    replication's original): the Report then says which verdicts replicated (a note says so
    when there is no such study).
    """
    from .harness.store import check_storage, load_records, load_spec_attrs, study_names
    from .report.claims import scorecard
    from .report.model import build_report
    from .report.resample import DEFAULT_REPLICATES

    check_storage(storage, must_exist=True)
    out_dir = None if out is None else check_output_dir(out)
    records = load_records(storage, study)
    attrs = load_spec_attrs(storage, study)
    original, notes = None, []
    if original_study is not None:
        if original_study in study_names(storage):
            claims = scorecard(load_records(storage, original_study))
            original = {"scorecard": [c.to_dict() for c in claims]}
        else:
            notes.append(f"no study {original_study!r} in this store to compare the verdicts "
                         "with (run the preset on its own seeds into the same folder first)")
    rep = build_report(records, spec=attrs.get("spec"), versions=attrs.get("versions"),
                       original=original, title=title or "weightdecay report",
                       n_boot=n_boot or DEFAULT_REPLICATES, notes=notes)
    if out_dir is not None:
        _write_views(rep, out_dir, root)
    return rep


# ------------------------------------------------------------------------------ reproduce


@dataclass
class ReproduceOutcome(_Runs):
    """What :func:`reproduce` did: the preset's study, its records, its Report, how many runs
    it trained now, and the wall time (``timing``: this run's, or the last one that trained)."""

    preset: str
    study: str
    storage: str
    out: Path
    records: list[dict[str, Any]]
    report: Report
    ran: int
    wall_seconds: float
    timing: Timing | None = None



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


def _last_timing(path: Path) -> Timing | None:
    """The measurement an earlier run left in ``path`` (reproduce.json), if readable."""
    from .report.model import Timing

    try:
        return Timing.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def reproduce(preset: str, out: str | os.PathLike, *, seeds: Sequence[int] | None = None,
              workers: int = 2, progress: bool = True, download: bool = False,
              stream: TextIO | None = None, adopt_study: str | None = None
              ) -> ReproduceOutcome:
    """Run a preset of the paper's experiments and report it: plan -> run -> Report ->
    ``stats.json``.

    The store is ``out/store.db``; ``trials.csv``, report.html, its figures and
    ``stats.json`` go to ``out`` -- or, for a replication on other ``seeds`` (its own study,
    ``<preset>-seeds-S1-S2-...``, in the same store), to ``out/<study>``, and the Report
    then compares its verdicts with the original's. Run again, it resumes. When it trained
    runs, its wall time (sweep and report) is written to ``reproduce.json`` and carried in
    the Report (``timing``).
    """
    from .harness.local import run_local
    from .harness.presets import get_preset
    from .harness.spec import plan_sweep, with_seeds
    from .harness.store import export_trials, sqlite_url
    from .harness.study import SpecChanged
    from .report.model import Timing

    started = time.perf_counter()
    spec = get_preset(preset)
    plan = plan_sweep(spec, max_runs=None) if seeds is None else with_seeds(spec, seeds)
    study = plan.name or preset  # every preset names itself
    root = check_output_dir(out)
    # a replication on other seeds shares the store but writes its files beside it
    out_dir = root if seeds is None else root / study
    _check_devices(plan)
    if download and preset == "cifar10":
        _download_cifar10()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = sqlite_url(root / "store.db", root=root)
    done_before = _complete(storage, study)
    try:
        records = run_local(plan, storage, study, workers=workers, out_dir=out_dir, root=root,
                            progress=progress, stream=stream, adopt_study=adopt_study)
    except SpecChanged:
        raise InputError(f"{root} holds the runs of another version of the {preset!r} preset "
                         f"(study {study!r}: its design has changed since); give another "
                         "--out, or move that folder away") from None
    export_trials(storage, study, "csv", out_dir / "trials.csv", root=root)
    rep = report(storage, study, out_dir, root=root,
                 original_study=None if seeds is None else spec["name"])
    wall = time.perf_counter() - started
    complete = sum(r.get("state") == "COMPLETE" for r in records)
    ran = complete - done_before
    if ran > 0:  # the wall time of a run that trained (sweep and report)
        measured = Timing(preset, study, len(records), ran, complete, workers, os.cpu_count(),
                          round(wall, 1))
        write_atomic(out_dir / "reproduce.json",
                     json.dumps(measured.to_dict(), indent=1) + "\n", root=root)
    timing = measured if ran > 0 else _last_timing(out_dir / "reproduce.json")
    rep.timing = timing
    _write_stats(rep, out_dir, root)
    return ReproduceOutcome(preset, study, storage, out_dir, records, rep, ran, wall, timing)

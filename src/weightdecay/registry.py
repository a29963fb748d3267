"""One table of names: data sets, models, optimizers, schedules, experiments and figures.

Every layer reads its names here -- the command line's choices, :class:`RunConfig`'s checks,
the sweep spec, the builders of the harness, the report's labels and its figures -- so a
name is written once. Importing this module is cheap (no torch, no numpy): the entries name
what builds them by import strings (``"package.module:function"``), resolved only when a
run is set up or a figure drawn, by :func:`resolve`.

Built-in entries, and the contracts their targets follow:

- a **data set** loader is called as ``loader(*, root, download, device, augment,
  test_size)`` and returns a :class:`weightdecay.harness.data.Dataset`;
- a **model** builder is called as ``builder(input_shape, num_classes, **options)`` and
  returns a ``torch.nn.Module``;
- a **figure** function takes the report's evidence
  (:class:`weightdecay.report.claims.Evidence`) and returns a matplotlib ``Figure``;
- an **optimizer** is a class of :mod:`weightdecay.optim` named by its label; whether it
  decays decoupled (Algorithms 1 and 2 of Loshchilov & Hutter, ICLR 2019) is read from the
  class's ``decoupled`` attribute, never written here.

Names of the form ``"package.module:function"`` resolve through :func:`resolve` too: a
user's own model (``function(input_shape, num_classes) -> torch.nn.Module``) or data set
(``function() -> (x_train, y_train, x_test, y_test)`` tensors, or a harness ``Dataset``).
Which modules a process may import is its caller's decision (:func:`module_allowed`: a
worker's ``--allow-module``); :func:`user_code` imports one and hashes its source, so that a
run records which code it ran.

Beside the names, the one rule that picks a "best setting" (:func:`best_setting`), which the
terminal tables, report.html and the figures all use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DATASETS",
    "EXPECTED",
    "EXPERIMENTS",
    "FIGURES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "SETTING_FIELDS",
    "BestSetting",
    "UserCode",
    "UserCodeError",
    "DatasetEntry",
    "FigureEntry",
    "ModelEntry",
    "OptimizerEntry",
    "best_setting",
    "check_import_string",
    "dataset",
    "figure",
    "is_decoupled",
    "is_import_string",
    "model",
    "module_allowed",
    "optimizer",
    "optimizer_label",
    "resolve",
    "schedule_label",
    "setting_key",
    "source_hash",
    "user_code",
]


@dataclass(frozen=True)
class DatasetEntry:
    """A data set: its loader, the shape of one input, and the model used when none is named.

    ``generated``: the test split can be redrawn larger (``RunConfig.test_size``)."""

    name: str
    target: str
    input_shape: tuple[int, ...]
    default_model: str
    generated: bool = False
    about: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """A network: its builder, the inputs it takes, and the option ``RunConfig.width`` sets."""

    name: str
    target: str
    inputs: str  # "(C, L)": 1-D signals; "(C, H, W)": images; "any"
    width_option: str
    about: str = ""


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer of the paper: ``label`` is its name in the paper and its class in
    :mod:`weightdecay.optim` (SGD, SGDW, Adam, AdamW)."""

    name: str
    label: str

    def cls(self) -> Any:
        """The optimizer class (imports torch)."""
        return getattr(importlib.import_module("weightdecay.optim"), self.label)

    @property
    def decoupled(self) -> bool:
        """Decoupled weight decay (SGDW, AdamW) or L2 through the gradient (SGD, Adam), as the
        class says (its ``decoupled`` attribute)."""
        return bool(self.cls().decoupled)


@dataclass(frozen=True)
class FigureEntry:
    """A figure of the report, in report order.

    ``tag``: the experiment whose records it draws (``None``: always drawn, from whatever is
    stored); ``needs``: what those records must hold, in words; ``untagged``: drawn too from
    records without an experiment tag; ``tables``: its heat maps are also listed as numbers
    (report.html, stats.json)."""

    name: str
    target: str
    tag: str | None
    caption: str
    needs: str = ""
    untagged: bool = True
    tables: bool = False


# ------------------------------------------------------------------------------ the tables

_DATASETS = {e.name: e for e in (
    DatasetEntry("mnist1d", "weightdecay.harness.data:_load_mnist1d", (1, 40), "cnn1d_bn",
                 generated=True, about="MNIST-1D (Greydanus 2020), generated offline"),
    DatasetEntry("digits", "weightdecay.harness.data:_load_digits", (1, 8, 8),
                 "resnet_small", about="scikit-learn's 8x8 digits, bundled"),
    DatasetEntry("cifar10", "weightdecay.harness.cifar10:_load_cifar10", (3, 32, 32),
                 "shakeshake26_2x64d", about="CIFAR-10, the paper's data set"),
)}

_MODELS = {e.name: e for e in (
    ModelEntry("cnn1d_bn", "weightdecay.harness.models:_cnn1d_bn", "(C, L)", "channels",
               "1-D CNN with BatchNorm (its conv weights are scale-invariant)"),
    ModelEntry("cnn1d", "weightdecay.harness.models:_cnn1d", "(C, L)", "channels",
               "the same 1-D CNN without BatchNorm"),
    ModelEntry("mlp", "weightdecay.harness.models:_mlp", "any", "hidden",
               "two hidden ReLU layers"),
    ModelEntry("resnet_small", "weightdecay.harness.models:_resnet_small", "(C, H, W)",
               "width", "CIFAR-style ResNet-20 (He et al. 2016), widths 8/16/32"),
    ModelEntry("shakeshake26_2x64d", "weightdecay.harness.models:_shakeshake26_2x64d",
               "(C, H, W)", "width", "the paper's Shake-Shake 26 2x64d (Gastaldi 2017)"),
)}

_OPTIMIZERS = {e.name: e for e in (
    OptimizerEntry("sgd", "SGD"),
    OptimizerEntry("sgdw", "SGDW"),
    OptimizerEntry("adam", "Adam"),
    OptimizerEntry("adamw", "AdamW"),
)}

#: eta_t schedules, with their names in the figures; "restarts" is SGDR's warm restarts
_SCHEDULES = {"fixed": "fixed", "step": "step-drop", "linear": "linear", "cosine": "cosine",
              "restarts": "warm restarts"}

#: experiment tags (a sweep spec tags runs; the report draws and scores by tag): the paper's
#: figures, then this project's experiments around them (decay conventions, the mechanism
#: ablation, the decay variants, and the ``mechanism`` preset's: runs with the equilibrium
#: monitor, and AdamW's Fig. 2 with the decay restricted to subsets of the parameters)
EXPERIMENTS = ("fig1", "fig2", "fig3", "fig4", "supp1", "supp3", "conventions", "ablation",
               "variants", "equilibrium", "decay_subsets")

_F = "weightdecay.report.figures:"
_C = "weightdecay.report.curves:"
_FIGURES = {e.name: e for e in (
    FigureEntry(
        "variants", _F + "fig_variants", "variants", untagged=False,
        needs="sgdw/adamw under several decay rules", caption=(
            "Decay variants — SGDW and AdamW under the paper's decay (η_t·λ), torch's "
            "(lr_t·λ), corrected (AdamC, lr_t²/lr_max·λ), cautious decay, and decay of the "
            "scale-invariant weights only; each heat map in its rule's own λ units.")),
    FigureEntry(
        "fig2", _F + "fig2", "fig2", tables=True, needs="sgd, sgdw, adam or adamw", caption=(
            "Fig. 2 — final test error (%) over (α, λ) for SGD, SGDW, Adam and AdamW: each "
            "cell's mean over seeds ± its bootstrap standard error (seeds and test "
            "examples); red rings: the 10 best cells; ◆: the best λ of each learning rate "
            "(a local parabola through the row's best cell), dashed: the fitted slope.")),
    FigureEntry(
        "slopes", _F + "fig_slopes", "fig2", needs="sgd, sgdw, adam or adamw", caption=(
            "The best decay of each learning rate with its 90 % bootstrap range, and the "
            "fitted line; Prop. 1 predicts slope −1 with L2 (SGD), 0 when decoupled.")),
    FigureEntry(
        "fig1", _F + "fig1", "fig1", tables=True,
        needs="adam/adamw with fixed, step or cosine schedules", caption=(
            "Fig. 1 — final test error over (α, λ) for Adam (L2) and AdamW under the fixed, "
            "step-drop and cosine schedules.")),
    FigureEntry(
        "fig3", _C + "fig3", "fig3", needs="adam and adamw", caption=(
            "Fig. 3 — Adam vs AdamW over a long run: learning curves (±1 SE over seeds), "
            "test error vs λ and test error vs training loss.")),
    FigureEntry(
        "fig4", _C + "fig4", "fig4", needs="adam/adamw/sgdw with and without restarts",
        caption=(
            "Fig. 4 — test error per epoch with one cosine cycle and with warm restarts "
            "(anytime performance), ±1 SE over seeds.")),
    FigureEntry(
        "supp1", _C + "supp1", None, caption=(
            "Supp. Fig. 1 — the schedule multiplier η_t of cosine annealing with warm "
            "restarts; the ends of the periods are the recommended checkpoints.")),
    FigureEntry(
        "equilibrium", _F + "fig_equilibrium", "equilibrium", untagged=False,
        needs="runs with the equilibrium monitor (monitor_every)", caption=(
            "Mechanism (a) — the angular update per step, measured (solid) against the "
            "equilibrium r = √(2d(1−b)/(1+b)) predicted for the optimizer, its decay "
            "convention and η_t (dashed), for the scale-invariant convolutions, BatchNorm's "
            "scale and shift, and the head (for these two the formula is a reference only); "
            "one colour per learning rate; measured: RMS over seeds and 5 measured updates.")),
    FigureEntry(
        "rotation", _F + "fig_rotation", "equilibrium", untagged=False,
        needs="monitored runs at a constant schedule", caption=(
            "Mechanism (b) — the scale-invariant weights' rotation over the stationary window "
            "against α (bars: range over seeds; dashed: predicted): flat in the paper's "
            "convention (d = η_t·λ), ∝ √α in torch's (d = lr_t·λ); the legend gives the fitted "
            "slope d log r / d log α with its 90 % interval.")),
    FigureEntry(
        "gradnorm", _F + "fig_gradnorm", "equilibrium", untagged=False,
        needs="monitored cosine AdamW runs", caption=(
            "Mechanism (d) — the scale-invariant layers' gradient norm over a cosine run, "
            "relative to the middle of training (light band), with the paper's decay and the "
            "corrected one (AdamC); the last 10 % of training (dark band) gives the ratio.")),
    FigureEntry(
        "decay_subsets", _F + "fig_decay_subsets", "decay_subsets", untagged=False,
        tables=True, needs="AdamW with the decay restricted to subsets of the parameters",
        caption=(
            "Mechanism (c) — AdamW's Fig. 2 heat maps with every parameter decayed, with only "
            "the scale-invariant weights decayed, and with only the others (the head, "
            "BatchNorm's scale and shift); ◆: the best λ of each α, dashed: the fitted slope.")),
    FigureEntry(
        "supp3", _F + "supp3", "supp3", tables=True, needs="runs at several epoch budgets",
        caption=(
            "Supp. Fig. 3 — heat maps at several epoch budgets, raw λ vs normalized λ_norm "
            "(App. B.1): the best raw λ should move with the budget, the best λ_norm less.")),
)}

#: data set names (:func:`weightdecay.harness.data.load_dataset`)
DATASETS = tuple(_DATASETS)
#: model names (:func:`weightdecay.harness.models.build_model`)
MODELS = tuple(_MODELS)
#: "sgd"/"adam" add lambda*theta to the gradient (L2); "sgdw"/"adamw" decay decoupled
OPTIMIZERS = tuple(_OPTIMIZERS)
#: eta_t schedule names
SCHEDULES = tuple(_SCHEDULES)
#: the report's figures, in report order
FIGURES = tuple(_FIGURES)


def _entry(table: Mapping[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} name {name!r}; known: {', '.join(table)}") from None


def dataset(name: str) -> DatasetEntry:
    """The entry of data set ``name`` (``ValueError`` naming the known ones otherwise)."""
    return _entry(_DATASETS, "dataset", name)


def model(name: str) -> ModelEntry:
    """The entry of model ``name``."""
    return _entry(_MODELS, "model", name)


def optimizer(name: str) -> OptimizerEntry:
    """The entry of optimizer ``name``."""
    return _entry(_OPTIMIZERS, "optimizer", name)


def figure(name: str) -> FigureEntry:
    """The entry of figure ``name``."""
    return _entry(_FIGURES, "figure", name)


@functools.cache
def is_decoupled(name: str) -> bool:
    """Whether optimizer ``name`` decays decoupled (read from its class; imports torch)."""
    return optimizer(name).decoupled


def optimizer_label(name: Any, schedule: Any = None) -> str:
    """The paper's name of an optimizer (SGD, SGDW, Adam, AdamW), + "R" with warm restarts
    (AdamWR, SGDWR: Sec. 4 of the paper); an unknown name is returned as it is."""
    entry = _OPTIMIZERS.get(name)
    label = entry.label if entry is not None else str(name)
    return label + "R" if schedule == "restarts" else label


def schedule_label(name: str) -> str:
    """A schedule's name in the figures ("step-drop", "warm restarts", ...)."""
    return _SCHEDULES.get(name, str(name))


# ------------------------------------------------------------------------------ resolution

_IMPORT_STRING = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
#: what a user's function must be, by kind (the one line of every error about it)
EXPECTED = {
    "model": "a function (input_shape, num_classes) -> torch.nn.Module",
    "dataset": "a function () -> (x_train, y_train, x_test, y_test) tensors, or a "
               "weightdecay.harness.data.Dataset",
    "figure": "a function (evidence) -> matplotlib Figure",
}


class UserCodeError(ValueError):
    """A user's module that cannot be imported, lacks the function named, or returns what
    its kind does not take (:data:`EXPECTED`); the message is one line."""


def is_import_string(name: Any) -> bool:
    """Whether ``name`` names a user's function, ``"package.module:function"``."""
    return isinstance(name, str) and ":" in name


def check_import_string(kind: str, name: str) -> str:
    """``name`` if it is a well-formed ``"package.module:function"`` (nothing is imported),
    else :class:`UserCodeError` in one line."""
    if not isinstance(name, str) or not _IMPORT_STRING.fullmatch(name):
        raise UserCodeError(f"{kind}={name!r} is not an import string "
                            f"'package.module:function' naming {EXPECTED[kind]}")
    return name


def module_allowed(name: str, allowed: Iterable[str]) -> bool:
    """Whether the module of import string ``name`` is one of ``allowed`` or inside one of
    them (``"mylab"`` allows ``"mylab:f"`` and ``"mylab.models:f"``, not ``"mylabx:f"``)."""
    module = name.partition(":")[0]
    return any(module == a or module.startswith(a + ".") for a in allowed)


def resolve(kind: str, name: str) -> Callable[..., Any]:
    """What builds ``name``: a built-in entry's target, or ``"package.module:function"``.

    ``kind`` is ``"dataset"``, ``"model"`` or ``"figure"``. A built-in name resolves to
    its entry's target; a name with a colon is imported as it says (no policy here: the
    caller decides which modules it trusts, :func:`module_allowed`). Raises ``ValueError``
    in one line: unknown name; for an import string :class:`UserCodeError`: malformed, a
    module that cannot be imported (or raises while it is), a missing or non-callable
    attribute.
    """
    tables: dict[str, Mapping[str, Any]] = {"dataset": _DATASETS, "model": _MODELS,
                                             "figure": _FIGURES}
    if kind not in tables:
        raise ValueError(f"kind must be one of {', '.join(tables)}, got {kind!r}")
    if not is_import_string(name):
        return _import(kind, name, _entry(tables[kind], kind, name).target, "")
    check_import_string(kind, name)
    return _import(kind, name, name, f"; expected {EXPECTED[kind]}, importable from the "
                                     "working directory, the spec's folder or PYTHONPATH")


def _import(kind: str, name: str, target: str, expected: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: ImportError, SyntaxError, what its body raises
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UserCodeError(f"{kind} {name!r}: cannot import module {module_name!r} "
                            f"({why}){expected}") from None
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise UserCodeError(f"{kind} {name!r}: module {module_name!r} has no callable "
                            f"{attr!r}{expected}")
    return obj


@dataclass(frozen=True)
class UserCode:
    """A user's function and the hash of its source.

    ``sha256``: the SHA-256 of the source of the module the import string names and of the
    module that defines the function, if another (each file's bytes, with its module
    name; not its path, so that the same code hashes the same on every machine). Code that
    module imports from elsewhere is not part of it."""

    name: str
    function: Callable[..., Any]
    modules: tuple[str, ...]
    sha256: str


#: (kind, name) -> (the module object it was hashed for, its UserCode); a module imported
#: again (another object) is hashed again. Keyed by the object itself, not its id(): a new
#: module can get the id of a collected one.
_USER_CODE: dict[tuple[str, str], tuple[Any, UserCode]] = {}


def user_code(kind: str, name: str) -> UserCode:
    """Import the user's function ``name`` (:func:`resolve`) and hash its source, once per
    process and module object: the hash is that of the files when they were imported, the
    code this process runs. Raises :class:`UserCodeError` (one line)."""
    function = resolve(kind, name)
    module_name = name.partition(":")[0]
    module = importlib.import_module(module_name)  # already imported by resolve
    cache_key = (kind, name)
    cached = _USER_CODE.get(cache_key)
    if cached is None or cached[0] is not module:
        sources = {module_name: getattr(module, "__file__", None)}
        defining = getattr(function, "__module__", None)
        if isinstance(defining, str) and defining != module_name:
            try:
                sources[defining] = inspect.getsourcefile(function)
            except TypeError:  # a builtin: no file
                sources[defining] = None
        digest = hashlib.sha256()
        for mod in sorted(sources):
            digest.update(f"{mod}\n".encode())
            try:
                with open(sources[mod] or "", "rb") as fh:
                    digest.update(fh.read())
            except OSError:  # no file (a namespace or builtin module): its name only
                digest.update(b"-")
        cached = module, UserCode(name, function, tuple(sorted(sources)), digest.hexdigest())
        _USER_CODE[cache_key] = cached
    return cached[1]


def source_hash(model: str, dataset: str) -> str | None:
    """The hash a run of ``model`` on ``dataset`` records (``RunConfig.source_hash``): the
    SHA-256 of the :func:`user_code` hashes of whichever of the two is an import string
    (model first); ``None`` when both are built-in names. Imports them."""
    parts = [f"{kind}={name}:{user_code(kind, name).sha256}"
             for kind, name in (("model", model), ("dataset", dataset))
             if is_import_string(name)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else None


# ------------------------------------------------------------------------------ best setting

#: what names a run's setting: its experiment and every RunConfig field but the seed (the
#: seeds of one setting are its repeats; tests/test_registry.py keeps this equal to RunConfig)
SETTING_FIELDS = (
    "experiment", "dataset", "model", "optimizer", "lr", "weight_decay", "weight_decay_norm",
    "decay_convention", "schedule", "T_0", "T_mult", "milestones", "drop_factor", "epochs",
    "batch_size", "device", "momentum", "decay_all", "width", "test_size", "eval_every",
    "cautious", "l1", "scale_invariant_only", "compile", "source_hash", "decay_subset",
    "monitor_every",
)


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def setting_key(record: Mapping[str, Any]) -> tuple:
    """The setting of a record: its :data:`SETTING_FIELDS` values (hashable)."""
    return tuple(_frozen(record.get(name)) for name in SETTING_FIELDS)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class BestSetting:
    """The best setting of a group of runs (:func:`best_setting`).

    Attributes:
        runs: the setting's completed runs (one per seed), in record order.
        error: their mean final test error (a fraction in [0, 1]).
    """

    runs: tuple[Mapping[str, Any], ...]
    error: float

    @property
    def setting(self) -> dict[str, Any]:
        """The setting's values (:data:`SETTING_FIELDS`)."""
        return {name: self.runs[0].get(name) for name in SETTING_FIELDS}

    @property
    def best_error(self) -> float:
        """Mean over the seeds of each run's lowest test error seen (NaN if none known)."""
        seen = [float(r["best_test_error"]) for r in self.runs
                if _finite(r.get("best_test_error"))]
        return sum(seen) / len(seen) if seen else math.nan


def best_setting(records: Iterable[Mapping[str, Any]]) -> BestSetting | None:
    """The setting with the lowest mean final test error over its seeds -- the one rule.

    Only completed runs count (state ``"COMPLETE"``, or no state). Runs are grouped by
    :func:`setting_key` (every field but the seed). A setting in which any seed diverged, or
    has no finite final test error, is never best: a diverged seed is an outcome of the
    setting, not a run to leave out (leaving it out would let a setting win on the seeds
    that survived). Ties go to the setting met first. ``None`` when no setting qualifies.
    """
    settings: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("state", "COMPLETE") == "COMPLETE":
            settings.setdefault(setting_key(r), []).append(r)
    best: BestSetting | None = None
    for runs in settings.values():
        if any(r.get("diverged") or not _finite(r.get("final_test_error")) for r in runs):
            continue
        error = sum(float(r["final_test_error"]) for r in runs) / len(runs)
        if best is None or error < best.error:
            best = BestSetting(tuple(runs), error)
    return best

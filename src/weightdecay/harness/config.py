"""Configuration of one training run of the experiment harness.

A :class:`RunConfig` is plain data: it is validated on construction, round-trips through
JSON via :meth:`RunConfig.to_dict` / :meth:`RunConfig.from_dict`, and has a stable
:meth:`RunConfig.key` hash that sweeps use to run each setting once.

Units: time is given in **epochs** here (``epochs``, ``T_0``, ``milestones``); the training
loop (:mod:`weightdecay.harness.train`) converts epochs to **updates** with
``steps_per_epoch = ceil(N / batch_size)`` before building the library's schedules, which
count updates (Loshchilov & Hutter, ICLR 2019, Sec. 2 and App. B.1; SGDR, ICLR 2017).

``weight_decay`` is the paper's raw lambda (per update, before eta_t; NOT multiplied by the
learning rate under the default ``decay_convention="schedule"``). For ``"sgd"`` and
``"adam"`` it is the L2 coefficient added to the gradient instead (Algorithms 1 and 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..registry import DATASETS, MODELS, OPTIMIZERS, SCHEDULES

__all__ = [
    "DATASETS",
    "DECAY_SUBSETS",
    "FIELD_HELP",
    "MAX_EPOCHS",
    "MAX_T_MULT",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "RunConfig",
    "check_name",
    "default_milestones",
    "name_parser",
]

#: the largest held-out test sample (``test_size``) of a generated data set (mnist1d)
MAX_TEST_SIZE = 100_000
#: the longest budget [epochs] (``epochs``, ``T_0``, ``milestones``): far beyond any run of
#: the paper (1800 epochs at most), and small enough that epochs * updates per epoch stays an
#: exact float
MAX_EPOCHS = 1_000_000
#: the largest restart-period growth factor: a period 1000x the previous one is longer than
#: any run; larger factors overflow the period arithmetic (T_mult**i) of the schedules
MAX_T_MULT = 1000.0
#: seeds are what ``numpy.random.seed`` (and ``torch.manual_seed``) take: [0, 2**32)
SEED_LIMIT = 2**32
#: the largest ``monitor_every`` [updates]
MAX_UPDATES = 2**31 - 1
#: the largest batch [examples]: an int32 index
MAX_BATCH_SIZE = 2**31 - 1
#: the parameters ``decay_subset`` can restrict the decay to (None: decay_all and
#: scale_invariant_only decide)
DECAY_SUBSETS = ("not_scale_invariant",)

# Fig. 1 of the paper drops the step schedule at epochs 30, 60, 80 of 100.
_DEFAULT_MILESTONE_FRACTIONS = (0.3, 0.6, 0.8)
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _decay_conventions() -> tuple[str, ...]:
    # the library owns the decay conventions (weightdecay.DECAY_CONVENTIONS); imported here,
    # not at the top: the library loads torch, which importing this module must not do (the
    # CLI parser and spec checking read it)
    from weightdecay.optim._decay import DECAY_CONVENTIONS

    return tuple(DECAY_CONVENTIONS)


def default_milestones(epochs: int) -> tuple[int, ...]:
    """Step-drop epochs at 30/60/80 % of ``epochs`` (the paper's Fig. 1: 30, 60, 80 of 100).

    Each milestone is at least epoch 1; duplicates (tiny budgets) are removed.
    """
    out: list[int] = []
    for frac in _DEFAULT_MILESTONE_FRACTIONS:
        m = max(1, round(frac * epochs))
        if not out or m > out[-1]:
            out.append(m)
    return tuple(out)


def check_name(field: str, value: Any) -> str:
    """``value`` if it can name the ``dataset`` or ``model`` (``field``) of a run: a built-in
    name of :mod:`weightdecay.registry`, or a well-formed ``"package.module:function"``
    (nothing is imported); else ``ValueError`` naming the valid ones."""
    if registry.is_import_string(value):
        return registry.check_import_string(field, value)
    valid = DATASETS if field == "dataset" else MODELS
    if value not in valid:
        raise ValueError(f"{field}={value!r} is not valid; valid names: {', '.join(valid)}, or "
                         "your own as 'package.module:function'")
    return value


def name_parser(field: str) -> Callable[[str], str]:
    """:func:`check_name` of ``field`` as a one-argument parser (a command-line flag's)."""
    return lambda value: check_name(field, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is finite as a float (an int past 1e308 is not)."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass
class RunConfig:
    """One training run (paper Sec. 4 setup, scaled down by default to MNIST-1D).

    Fields (units in brackets):

    - ``dataset``, ``model``: names from :data:`weightdecay.registry.DATASETS` and
      :data:`weightdecay.registry.MODELS`, or a user's function ``"package.module:function"``
      (:func:`weightdecay.registry.resolve`; a model ``(input_shape, num_classes) ->
      nn.Module``, a data set ``() -> (x_train, y_train, x_test, y_test)``). Only checked
      for form here: nothing is imported.
    - ``optimizer``: one of :data:`weightdecay.registry.OPTIMIZERS`; ``"sgd"``/``"adam"``
      use L2 (lambda*theta added to the gradient), ``"sgdw"``/``"adamw"`` decoupled decay
      (Algorithms 1, 2).
    - ``lr``: base learning rate alpha (> 0).
    - ``weight_decay``: raw lambda per update (>= 0); ignored when ``weight_decay_norm``
      is set.
    - ``weight_decay_norm``: lambda_norm of App. B.1 (>= 0) or ``None``. When set, lambda
      = lambda_norm * sqrt(b / (B * T)) with T the run length, or the current restart
      period T_i for ``schedule="restarts"`` (recomputed at each restart).
    - ``decay_convention``: what lambda is multiplied by per update, one of the library's
      ``weightdecay.DECAY_CONVENTIONS`` (``"schedule"``: eta_t * lambda, the paper's
      Algorithms 1-2).
    - ``schedule``: eta_t schedule, one of :data:`weightdecay.registry.SCHEDULES`, applied
      per update.
    - ``T_0`` [epochs, may be fractional, at most :data:`MAX_EPOCHS`]: first restart
      period; required for ``"restarts"``, ignored otherwise. ``T_mult`` (in [1,
      :data:`MAX_T_MULT`]): period growth factor.
    - ``milestones`` [epochs]: step-drop epochs for ``"step"``; ``None`` means 30/60/80 %
      of ``epochs`` (:func:`default_milestones`). ``drop_factor`` (in (0, 1]): multiplier
      per drop (the paper does not state it; 0.1 is the usual choice).
    - ``epochs`` [epochs] (1 .. :data:`MAX_EPOCHS`), ``batch_size`` [examples] (> 0),
      ``seed`` (in [0, 2**32): what ``numpy.random.seed`` takes).
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    - ``momentum``: beta1 in [0, 1): SGD/SGDW's momentum and Adam/AdamW's first-moment
      decay (the paper uses one beta1 = 0.9 for both; Adam's beta2 stays 0.999).
    - ``decay_all``: ``True`` (the paper) decays every parameter, biases and norm scales
      included; ``False`` exempts 1-D tensors and biases via
      :func:`weightdecay.param_groups_weight_decay`.
    - ``width``: the model's width (``cnn1d*``: channels, ``mlp``: hidden units,
      ``resnet_small``/``shakeshake26_2x64d``: base width); ``None`` = the model's default.
    - ``test_size``: ``mnist1d`` only: evaluate on this many held-out signals drawn from
      the same generator instead of the canonical 1000-example test split (a test error's
      binomial noise shrinks as 1/sqrt(n)); ``None`` = the canonical split.
    - ``eval_every`` [epochs] (> 0): the test error is computed every ``eval_every``
      epochs and after the last one (NaN in the history in between); 1 = every epoch.
    - ``cautious``: cautious weight decay (arXiv 2510.12402): decay only the coordinates
      where the update and the weight agree in sign (decoupled optimizers only).
    - ``l1`` (>= 0): an L1 factor beside ``weight_decay``: added as l1*sign(theta) to the
      gradient for ``sgd``/``adam``, a soft-threshold after the update for
      ``sgdw``/``adamw`` (scaled by the decay convention).
    - ``scale_invariant_only``: decay only the weights that a following normalization makes
      scale-invariant (found on the first training batch,
      :func:`weightdecay.find_scale_invariant_weights`); every other parameter gets none.
      Overrides ``decay_all``.
    - ``compile``: compile the training step (forward, loss, backward) with
      ``torch.compile``, once per process, where it is measured to pay (the ``cnn1d``
      models on CPU, :mod:`weightdecay.harness.step`) and works; ``False``: always the
      eager step. The same model either way; the float rounding differs.
    - ``source_hash``: the SHA-256 of the user code the run imports
      (:func:`weightdecay.registry.source_hash`: the model's and the data set's module, when
      they are import strings); set by the harness when it plans or starts the run, and
      part of its key, so that results of changed code never share a key with the old
      ones. ``None`` with built-in names only.
    - ``decay_subset``: ``None`` (``decay_all`` and ``scale_invariant_only`` decide) or one
      of :data:`DECAY_SUBSETS`: ``"not_scale_invariant"`` decays every parameter *except*
      the weights that a following normalization makes scale-invariant (found like
      ``scale_invariant_only``): the head, the normalizations' scales and shifts, biases.
      The opposite of ``scale_invariant_only`` (which keeps its name and run keys); overrides
      ``decay_all``, and is refused together with ``scale_invariant_only``.
    - ``monitor_every`` [updates]: ``None`` (off) or k >= 1: an
      :class:`weightdecay.diagnostics.EquilibriumMonitor` measures every k updates
      (independently of ``eval_every``) and the run's history keeps its per-category
      summaries (:mod:`weightdecay.harness.monitoring`). It changes no number of the
      training itself.

    Invalid values raise :class:`ValueError` naming the field and the value.
    """

    dataset: str = "mnist1d"
    model: str = "cnn1d_bn"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_norm: float | None = None
    decay_convention: str = "schedule"
    schedule: str = "cosine"
    T_0: float | None = None
    T_mult: float = 2.0
    milestones: tuple[float, ...] | None = None
    drop_factor: float = 0.1
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    momentum: float = 0.9
    decay_all: bool = True
    width: int | None = None
    test_size: int | None = None
    eval_every: int = 1
    cautious: bool = False
    l1: float = 0.0
    scale_invariant_only: bool = False
    compile: bool = True
    source_hash: str | None = None
    decay_subset: str | None = None
    monitor_every: int | None = None

    # -- validation -------------------------------------------------------------------------

    def __post_init__(self) -> None:
        if self.milestones is not None and isinstance(self.milestones, Sequence) and not (
            isinstance(self.milestones, str)
        ):
            self.milestones = tuple(self.milestones)
        self.validate()

    def validate(self) -> RunConfig:
        """Check every field; raise :class:`ValueError` naming the bad field and value.

        Returns ``self`` so that ``cfg.validate().key()`` chains.
        """
        check_name("dataset", self.dataset)
        check_name("model", self.model)
        for name, valid in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("decay_convention", _decay_conventions()),
        ):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(
                    f"{name}={value!r} is not valid; valid names: {', '.join(valid)}"
                )
        self._check_user_code()

        self._check_real("lr", low=0.0, low_open=True)
        self._check_real("weight_decay", low=0.0)
        if self.weight_decay_norm is not None:
            self._check_real("weight_decay_norm", low=0.0)
        self._check_real("T_mult", low=1.0, high=MAX_T_MULT, high_open=False)
        self._check_real("drop_factor", low=0.0, low_open=True, high=1.0, high_open=False)
        self._check_real("momentum", low=0.0, high=1.0)

        for name, high in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE),
                           ("eval_every", MAX_EPOCHS)):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if value > high:
                raise ValueError(f"{name} must be <= {high}, got {value!r}")
        if self.width is not None and (not _is_int(self.width) or not 1 <= self.width <= 4096):
            raise ValueError(f"width must be None or an integer in [1, 4096], got {self.width!r}")
        if self.test_size is not None:
            if not _is_int(self.test_size) or not 1 <= self.test_size <= MAX_TEST_SIZE:
                raise ValueError(f"test_size must be None or an integer in [1, {MAX_TEST_SIZE}], "
                                 f"got {self.test_size!r}")
            if registry.is_import_string(self.dataset) or \
                    not registry.dataset(self.dataset).generated:
                generated = [repr(n) for n in DATASETS if registry.dataset(n).generated]
                raise ValueError(f"test_size is only available for dataset "
                                 f"{' or '.join(generated)} (a generated data set), not "
                                 f"{self.dataset!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")

        if self.T_0 is not None:
            self._check_real("T_0", low=0.0, low_open=True, high=MAX_EPOCHS, high_open=False)
        if self.schedule == "restarts" and self.T_0 is None:
            raise ValueError(
                "T_0=None is not valid with schedule='restarts'; give the first period in "
                "epochs (the paper suggests 1-10 % of the budget)"
            )
        if self.milestones is not None:
            ms = self.milestones
            if not isinstance(ms, tuple) or not all(_is_number(m) for m in ms):
                raise ValueError(f"milestones must be a sequence of epochs, got {ms!r}")
            if not all(is_finite_number(m) and 0 < m <= MAX_EPOCHS for m in ms):
                raise ValueError(f"milestones must be epochs in (0, {MAX_EPOCHS}], got {ms!r}")
            if any(b <= a for a, b in zip(ms, ms[1:])):
                raise ValueError(f"milestones must be strictly increasing, got {ms!r}")

        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValueError(
                f"device={self.device!r} is not valid; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
            )
        for name in ("decay_all", "cautious", "scale_invariant_only", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        self._check_real("l1", low=0.0)
        if self.decay_subset is not None:
            if self.decay_subset not in DECAY_SUBSETS:
                raise ValueError(f"decay_subset={self.decay_subset!r} is not valid; valid: "
                                 f"None, {', '.join(map(repr, DECAY_SUBSETS))}")
            if self.scale_invariant_only:
                raise ValueError(f"decay_subset={self.decay_subset!r} and "
                                 "scale_invariant_only=True name opposite subsets; give one")
        if self.monitor_every is not None and (
                not _is_int(self.monitor_every) or not 1 <= self.monitor_every <= MAX_UPDATES):
            raise ValueError(f"monitor_every must be None or an integer in [1, {MAX_UPDATES}] "
                             f"(updates), got {self.monitor_every!r}")
        if self.cautious and not registry.is_decoupled(self.optimizer):
            decoupled = [o for o in OPTIMIZERS if registry.is_decoupled(o)]
            raise ValueError(f"cautious=True is a decoupled decay ({', '.join(decoupled)}), "
                             f"not {self.optimizer!r}")
        return self

    def _check_user_code(self) -> None:
        user = [v for v in (self.model, self.dataset) if registry.is_import_string(v)]
        if self.width is not None and registry.is_import_string(self.model):
            raise ValueError(f"width applies to the built-in models, not {self.model!r} "
                             "(a user's model is built as its function builds it)")
        if self.source_hash is None:
            return
        if not isinstance(self.source_hash, str) or not _SHA256.fullmatch(self.source_hash):
            raise ValueError(f"source_hash must be None or 64 hex digits (a SHA-256), got "
                             f"{self.source_hash!r}")
        if not user:
            raise ValueError("source_hash is the hash of a user's model or data set; this run "
                             "names built-in ones only")

    def _check_real(
        self,
        name: str,
        *,
        low: float,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = True,
    ) -> None:
        value = getattr(self, name)
        if not is_finite_number(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if value < low or (low_open and value == low):
            op = ">" if low_open else ">="
            raise ValueError(f"{name} must be {op} {low}, got {value!r}")
        if high is not None and (value > high or (high_open and value == high)):
            op = "<" if high_open else "<="
            raise ValueError(f"{name} must be {op} {high}, got {value!r}")

    # -- derived values -----------------------------------------------------------------------

    def resolved_milestones(self) -> tuple[float, ...]:
        """Step-drop epochs actually used: ``milestones`` or :func:`default_milestones`."""
        if self.milestones is not None:
            return tuple(self.milestones)
        return default_milestones(self.epochs)

    # -- serialisation -------------------------------------------------------------------------

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of field ``name`` (the one place run defaults are written)."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.default
        raise ValueError(f"{name!r} is not a RunConfig field; valid: "
                         f"{', '.join(cls.field_names())}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all fields, in declaration order (the flattened record keys)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields (``milestones`` as a list or ``None``)."""
        out = dataclasses.asdict(self)
        if out["milestones"] is not None:
            out["milestones"] = list(out["milestones"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build (and validate) a config from :meth:`to_dict` output.

        Missing keys take their defaults; unknown keys raise :class:`ValueError` naming
        them (use :meth:`field_names` to pick the config out of a larger record).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"data must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown RunConfig keys: {', '.join(map(str, unknown))}; "
                f"valid keys: {', '.join(cls.field_names())}"
            )
        return cls(**dict(data))

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def key(self, extra: Mapping[str, Any] | None = None) -> str:
        """Stable 16-hex-digit hash of the config (and of ``extra``, e.g. the experiment).

        Computed from canonical JSON (sorted keys), so it does not depend on the Python
        process, the field order or dict ordering. Integers and floats hash differently
        (``lr=1`` vs ``lr=1.0``): numbers are normalised to float for real-valued fields.
        """
        config = _canonical(self.to_dict())
        for name, default in _KEY_OPTIONAL.items():  # fields added later: keys stay stable
            if config[name] == default:
                del config[name]
        payload: dict[str, Any] = {"config": config}
        if extra:
            payload["extra"] = dict(extra)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


#: one line per field, the help of its flag (``weightdecay train --FIELD-NAME``; a bool field
#: is a switch away from its default, ``--no-decay-all``); the class docstring says the rest
FIELD_HELP = {
    "dataset": "data set: a built-in name, or package.module:function (your own)",
    "model": "network: a built-in name, or package.module:function (your own)",
    "optimizer": "sgd/adam: L2 added to the gradient; sgdw/adamw: decoupled decay",
    "lr": "base learning rate alpha (> 0)",
    "weight_decay": "raw lambda per update (times eta_t, NOT times alpha); the L2 coefficient "
                    "for sgd/adam",
    "weight_decay_norm": "normalized lambda_norm (paper App. B.1), instead of --weight-decay",
    "decay_convention": "what lambda is multiplied by per update, one of "
                        "weightdecay.DECAY_CONVENTIONS (the paper: schedule = eta_t)",
    "schedule": "eta_t schedule",
    "T_0": "first restart period in epochs (schedule=restarts)",
    "T_mult": f"restart period growth factor (1 to {MAX_T_MULT:g})",
    "milestones": "step-drop epochs, comma-separated (default: 30/60/80%% of epochs)",
    "drop_factor": "multiplier at each step-drop milestone, in (0, 1]",
    "epochs": f"training epochs (at most {MAX_EPOCHS})",
    "batch_size": "examples per update",
    "seed": f"random seed, in [0, {SEED_LIMIT})",
    "device": "cpu, cuda, cuda:N or mps",
    "momentum": "SGD momentum / Adam beta1, in [0, 1)",
    "decay_all": "exempt biases and 1-D tensors from decay (the paper decays all)",
    "width": "model width (channels / hidden units; default: the model's own)",
    "test_size": "mnist1d: N held-out test signals from the generator instead of the "
                 "canonical 1000",
    "eval_every": "evaluate the test error every N epochs (and after the last)",
    "cautious": "cautious decay: only where update and weight agree in sign (sgdw/adamw)",
    "l1": "L1 factor (sgd/adam: l1*sign(theta) in the gradient; sgdw/adamw: soft-threshold "
          "after the update)",
    "scale_invariant_only": "decay only the weights a normalization makes scale-invariant",
    "compile": "train with the eager step (default: the step is compiled with torch.compile "
               "where it pays, cnn1d models on CPU)",
    "source_hash": "SHA-256 of the user module(s) named by --model/--dataset (default: that "
                   "of the code imported; a value given must match it)",
    "decay_subset": "not_scale_invariant: decay every parameter except the scale-invariant "
                    "weights",
    "monitor_every": "record the equilibrium monitor's per-category summaries every N updates",
}

# fields that enter the key only when they differ from these defaults, so that the keys of
# runs planned before the fields existed (stores, checkpoints) do not change
_KEY_OPTIONAL = {"width": None, "test_size": None, "eval_every": 1, "cautious": False,
                 "l1": 0.0, "scale_invariant_only": False, "compile": True,
                 "source_hash": None, "decay_subset": None, "monitor_every": None}

_REAL_FIELDS = (
    "lr", "weight_decay", "weight_decay_norm", "T_0", "T_mult", "drop_factor", "momentum", "l1"
)


def _canonical(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for name in _REAL_FIELDS:
        if out.get(name) is not None:
            out[name] = float(out[name])
    if out.get("milestones") is not None:
        out["milestones"] = [float(m) for m in out["milestones"]]
    return out

"""A user's own model and data set in the harness: which modules a process may import, from
where, and that runs of one study never mix two versions of that code.

A model or data set named ``"package.module:function"`` (:mod:`weightdecay.registry`) is
code from outside this package, and a store is shared: naming a module in a trial must not
be a way to run code on every worker. So:

- a process imports user code only for the modules its own caller allows
  (:func:`check_modules`; ``--allow-module`` on ``worker`` and ``train``; ``sweep`` allows
  the modules of the spec it was given, :func:`user_modules`), from the folder it was
  told first (:func:`module_path`: the spec's folder, or the working directory);
- every run records the SHA-256 of that code's source (``RunConfig.source_hash``, set when
  the sweep is planned, part of the run's key); a worker whose copy hashes differently
  leaves the trial to another (:func:`why_not_here`), and a study holding runs of another
  version of the code is refused (:func:`check_same_code`);
- before anything trains, each user model and data set is loaded and tried on two inputs
  (:func:`check_configs`), so that a wrong return value is one line, not N failed trials.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Sec. 4:
the experiments a user's own model is swept with).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import registry
from .config import RunConfig

__all__ = ["check_configs", "check_modules", "check_same_code", "module_path", "user_modules",
           "why_not_here"]

_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def check_modules(modules: Sequence[str] | str) -> tuple[str, ...]:
    """``modules`` (names like ``"mylab"`` or ``"mylab.models"``; a string: comma-separated)
    as a tuple, or ``ValueError`` naming the first that is not a module name."""
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",") if m.strip()]
    out = tuple(modules)
    for m in out:
        if not isinstance(m, str) or not _MODULE.fullmatch(m):
            raise ValueError(f"--allow-module {m!r} is not a module name (e.g. mylab or "
                             "mylab.models)")
    return out


@contextlib.contextmanager
def module_path(folder: str | os.PathLike) -> Iterator[None]:
    """``folder`` first on ``sys.path`` meanwhile (where a spec's user modules are found)."""
    entry = os.fspath(Path(folder).resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def user_modules(configs: Iterable[RunConfig]) -> tuple[str, ...]:
    """The modules of the user code ``configs`` name (their import strings), sorted."""
    return tuple(sorted({name.partition(":")[0] for c in configs for name in (c.model, c.dataset)
                         if registry.is_import_string(name)}))


def check_configs(configs: Iterable[RunConfig]) -> None:
    """Each distinct user model / data set of ``configs`` loads, builds and answers two
    inputs (:func:`weightdecay.harness.build.check_user_code`). Raises
    :class:`weightdecay.registry.UserCodeError` (one line)."""
    from .build import check_user_code

    seen = set()
    for c in configs:
        if c.source_hash is not None and (c.model, c.dataset, c.test_size) not in seen:
            seen.add((c.model, c.dataset, c.test_size))
            check_user_code(c)


def why_not_here(raw: Mapping[str, Any], allow: Sequence[str]) -> str | None:
    """Why a worker allowed ``allow`` leaves the trial of stored config ``raw`` to another
    (its user code is not allowed, cannot be imported here, or is another version of it),
    or ``None``: it runs it."""
    user = {kind: raw.get(kind) for kind in ("model", "dataset")
            if registry.is_import_string(raw.get(kind))}
    if not user:
        return None
    refused = sorted({str(n).partition(":")[0] for n in user.values()
                      if not registry.module_allowed(str(n), allow)})
    if refused:
        return (f"its user code is not allowed on this worker (start it with "
                f"{' '.join('--allow-module ' + m for m in refused)} to run it)")
    try:
        here = registry.source_hash(str(raw.get("model")), str(raw.get("dataset")))
    except ValueError as exc:
        return f"its user code cannot be imported here: {exc}"
    if here != raw.get("source_hash"):
        return (f"this worker's copy of {', '.join(map(str, user.values()))} differs from the "
                f"code the sweep was planned with (source sha256 {here} here, "
                f"{raw.get('source_hash')} planned)")
    return None


def check_same_code(configs: Iterable[RunConfig], storage_url: str, study_name: str) -> None:
    """Refuse to add runs of changed user code to a study that holds runs of the old code:
    two versions of a module are never mixed in one study. Raises
    :class:`weightdecay.harness.store.StoreError` (one line)."""
    from .store import StoreError, _load_study, describe_url, sqlite_path, study_names

    planned: dict[tuple[Any, Any], str] = {(c.model, c.dataset): c.source_hash
                                           for c in configs if c.source_hash is not None}
    path = sqlite_path(storage_url)
    if not planned or (path is not None and not path.exists()) \
            or study_name not in study_names(storage_url):
        return
    for t in _load_study(storage_url, study_name).get_trials(deepcopy=False):
        c = t.user_attrs.get("config")
        c = c if isinstance(c, Mapping) else {}
        now = planned.get((c.get("model"), c.get("dataset")))
        if now is not None and c.get("source_hash") != now:
            raise StoreError(
                f"study {study_name!r} in {describe_url(storage_url)} holds runs of "
                f"{c.get('model')} on {c.get('dataset')} trained with other code (source "
                f"sha256 {str(c.get('source_hash'))[:12]}..., now {now[:12]}...): results of "
                "two versions of the code are not mixed in one study; use another study name "
                "(--study), or restore the code the study was planned with")

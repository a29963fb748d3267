"""Writing files that other people can read at any moment: atomically, and only where asked.

Every file the harness and the report write goes through :func:`write_atomic` (or
:func:`atomic_open`): the bytes go to a temporary file in the destination's own folder, are
flushed to disk, and then replace the destination with one ``os.replace``. A reader sees the
old file or the new one, never half of one; a full disk or a signal leaves the old file in
place (and no temporary behind).

``root`` is the folder the user named (``--out``): with it, the destination must lie inside
``root`` once every symbolic link on the way is followed. A link planted in the output folder
that leads outside it is refused with :class:`UnsafePathError` before anything is written. A
link at the destination that stays inside ``root`` is replaced by the new file (``os.replace``
renames over the link itself); the file it pointed to is never written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["UnsafePathError", "atomic_open", "check_inside", "write_atomic"]


class UnsafePathError(ValueError):
    """A destination that would be written outside the folder the user named."""


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` (absolute, links of its folders resolved) if it lies inside ``root``.

    Raises :class:`UnsafePathError` when ``path`` or a folder on its way is a symbolic link
    that leads outside ``root`` (resolved itself, so a ``root`` reached through a link is
    fine), or when ``path`` is not under ``root`` at all."""
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.abspath(path))
    # the destination entry itself: a link there must stay inside root too (a reader that
    # follows it would otherwise read a file from elsewhere as ours)
    real = Path(os.path.realpath(target))
    for candidate, what in ((real, "resolves to"), (Path(os.path.realpath(target.parent)),
                                                    "lies in")):
        if candidate != root_real and root_real not in candidate.parents:
            raise UnsafePathError(
                f"refusing to write {target}: it {what} {candidate}, outside {root_real} "
                "(a symbolic link leads out of the output folder)")
    return Path(os.path.realpath(target.parent)) / target.name


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, root: str | os.PathLike | None = None,
                encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes). On an exception the temporary file is
    removed and ``path`` is left as it was. A ``path`` that is a device or a pipe
    (``/dev/stdout``) is written into, never replaced (refused with ``root``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes new files: mode must be 'w' or 'wb', got {mode!r}")
    dest = check_inside(path, root) if root is not None else Path(os.path.abspath(path))
    if _special(dest):  # a device or a pipe (-o /dev/stdout): nothing to replace, and a
        if root is not None:  # device node must never be replaced by a file
            raise UnsafePathError(f"refusing to write {dest}: it is not a regular file")
        binary = mode == "wb"
        with open(dest, mode, encoding=None if binary else encoding,
                  newline=None if binary else newline) as fh:
            yield fh
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        binary = mode == "wb"
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_atomic(path: str | os.PathLike, data: str | bytes, *,
                 root: str | os.PathLike | None = None) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", root=root) as fh:
        fh.write(data)
    return Path(path)


def _special(path: Path) -> bool:
    """Whether ``path`` (links followed) exists and is neither a regular file nor a folder."""
    return os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

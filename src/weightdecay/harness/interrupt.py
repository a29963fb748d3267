"""Stopping a sweep or a worker on SIGINT / SIGTERM: cleanly, once, with the exit code of the
signal.

:func:`stop_on_signals` installs, for the duration of a ``with`` block in the main thread,
a handler of SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch scheduler's pre-emption) that
stops the code with :class:`Interrupted` -- a :class:`KeyboardInterrupt` that knows its
signal and its exit code (128 + signal number: 130 for SIGINT, 143 for SIGTERM). The first
signal counts; later ones are ignored while the code that caught it cleans up (stops
workers, hands their trials back): that clean-up is what a second Ctrl-C would otherwise
break. A disposition of ``SIG_IGN`` (e.g. SIGINT of a job started in the background by a
shell) is left alone.

Where the exception is raised matters. Raised inside a database call, it can leave a
connection holding SQLite's write lock, which the clean-up then waits for; raised inside a
library that swallows it (a finaliser, a bare ``except:``), it is lost. So the harness's
loops run :func:`deferred_signals`: a signal is only recorded, and raised at a safe point
-- :func:`check_interrupted`, or the end of the block -- and at once only inside
:func:`interruptible` sections, which touch no store (training a run, sleeping between
polls). :func:`check_interrupted` also raises again an interruption that was swallowed.
One that lands in a finaliser or a weak-reference callback (e.g. importlib's module-lock
clean-up while torch imports lazily) is swallowed by Python itself, which would print an
"Exception ignored ... Traceback" into the log: the hook for such exceptions drops
:class:`Interrupted` (and only it) while the handler is installed, since the next safe point
raises it again.

Outside the main thread (where Python cannot install signal handlers) all of these are
no-ops, and so are nested :func:`stop_on_signals`: the outermost one applies.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4 (each
figure is a sweep of many runs; an interrupted sweep must resume without losing any).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["Interrupted", "check_interrupted", "deferred_signals", "interruptible",
           "stop_on_signals"]

#: the signals that stop a sweep
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM was received: stop, hand back what is held, exit with
    :attr:`exit_code` (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        #: whether ``message`` says what was done about it (else: the signal's name only)
        self.described = message is not None
        self.message = message or f"interrupted by {signal.Signals(self.signum).name}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class _State:
    installed = False
    received: int | None = None  # the signal that counts; later ones are ignored
    raised = False               # whether it has been raised (at least once)
    depth = 0                    # > 0: inside deferred_signals (and not interruptible)


_STATE = _State()


def _raise() -> None:
    assert _STATE.received is not None
    _STATE.raised = True
    raise Interrupted(_STATE.received)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _STATE.received is not None:
        return  # already stopping: let the clean-up finish
    _STATE.received = signum
    if _STATE.depth == 0:
        _raise()


def _unraisable_hook(previous: Callable[[sys.UnraisableHookArgs], object]
                     ) -> Callable[[sys.UnraisableHookArgs], None]:
    """``sys.unraisablehook`` that drops our own swallowed :class:`Interrupted` (the next
    safe point raises it again) and passes everything else to ``previous``."""

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            previous(unraisable)

    return hook


def _active() -> bool:
    return _STATE.installed and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Stop with :class:`Interrupted` on the first SIGINT or SIGTERM received inside the
    block (raised at once, or at the next safe point inside :func:`deferred_signals`); the
    previous handlers are restored on exit."""
    if _STATE.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _handler)
    unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(unraisable)
    _STATE.installed, _STATE.received, _STATE.raised, _STATE.depth = True, None, False, 0
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable
        _STATE.installed, _STATE.received, _STATE.raised, _STATE.depth = False, None, False, 0


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Inside the block a signal is only recorded; it is raised at the next
    :func:`check_interrupted`, inside :func:`interruptible`, or when the block ends."""
    if not _active():
        yield
        return
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if _STATE.depth == 0 and _STATE.received is not None and not _STATE.raised:
            _raise()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A section of a :func:`deferred_signals` block where a signal raises at once (one
    received before is raised on entry). For code that holds no store connection."""
    if not _active():
        yield
        return
    depth, _STATE.depth = _STATE.depth, 0
    try:
        if _STATE.received is not None and not _STATE.raised:
            _raise()
        yield
    finally:
        _STATE.depth = depth


def check_interrupted() -> None:
    """A safe point: raise :class:`Interrupted` if a signal was received inside
    :func:`stop_on_signals` -- held back, or raised before and swallowed."""
    if _active() and _STATE.received is not None:
        _raise()

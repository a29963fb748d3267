"""Stopping a sweep or a worker on SIGINT / SIGTERM: cleanly, once, with the exit code of the
signal.

:func:`stop_on_signals` installs, for the duration of a ``with`` block in the main thread,
a handler of SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch scheduler's pre-emption) that
raises :class:`Interrupted` in the main thread -- a :class:`KeyboardInterrupt` that knows
its signal and its exit code (128 + signal number: 130 for SIGINT, 143 for SIGTERM). The
first signal raises; later ones are ignored while the code that caught it cleans up (stops
workers, hands their trials back): that clean-up is what a second Ctrl-C would otherwise
break. A disposition of ``SIG_IGN`` (e.g. SIGINT of a background job) is left alone.

An exception raised by a signal handler can land anywhere, including code that swallows it
(a finaliser, a library's bare ``except:``), so long-running loops also call
:func:`check_interrupted` at safe points (after each epoch, before each claim), which raises
it again.

:func:`deferred_signals` marks a short critical section -- claiming a trial and naming its
claimer, writing a trial's results -- during which a signal is held back and raised at the
end of the block, so that a signal never leaves a store half-updated.

Nested uses are no-ops, and outside the main thread (where Python cannot install signal
handlers) both are no-ops: the caller's own handling applies.

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Sec. 4 (each
figure is a sweep of many runs; an interrupted sweep must resume without losing any).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "check_interrupted", "deferred_signals", "stop_on_signals"]

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

    def with_message(self, message: str) -> Interrupted:
        """The same interruption, described by ``message`` (one line)."""
        return Interrupted(self.signum, message)


class _State:
    installed = False
    fired: int | None = None     # the signal already raised; later ones are ignored
    pending: int | None = None   # a signal held back by deferred_signals
    depth = 0                    # nesting of deferred_signals


_STATE = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _STATE.fired is not None:
        return  # already stopping: let the clean-up finish
    if _STATE.depth > 0:
        if _STATE.pending is None:
            _STATE.pending = signum
        return
    _STATE.fired = signum
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread on the first SIGINT or SIGTERM received
    inside the block; the previous handlers are restored on exit."""
    if _STATE.installed or not _in_main_thread():
        yield
        return
    previous = {}
    for signum in SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _handler)
    _STATE.installed, _STATE.fired, _STATE.pending, _STATE.depth = True, None, None, 0
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STATE.installed, _STATE.fired, _STATE.pending, _STATE.depth = False, None, None, 0


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold back a signal received inside the block; raise it (as :class:`Interrupted`) when
    the block ends."""
    if not (_STATE.installed and _in_main_thread()):
        yield
        return
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if _STATE.depth == 0 and _STATE.pending is not None and _STATE.fired is None:
            _STATE.fired, _STATE.pending = _STATE.pending, None
            raise Interrupted(_STATE.fired)


def check_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal was received inside :func:`stop_on_signals`
    (its first raise may have been swallowed); call it at points where stopping is safe."""
    if _STATE.installed and _STATE.fired is not None and _STATE.depth == 0 \
            and _in_main_thread():
        raise Interrupted(_STATE.fired)

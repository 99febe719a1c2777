"""SIGINT and SIGTERM: stop a sweep at its next chunk boundary with its checkpoints saved.

An experiment's entry point runs inside ``interruptible()``::

    with signals.interruptible():
        main()

While a sweep trains (``deferred()``, entered by ``sweep.run_sweep``), the first SIGINT or SIGTERM
only asks it to stop: every depth group finishes its chunk, saves its checkpoint and returns, and
``deferred`` then raises ``Interrupted``. Outside training (loading data, compiling, writing
results), or at a second signal, ``Interrupted`` is raised at once (files written atomically stay
whole; the last checkpoints are kept). ``interruptible`` turns ``Interrupted`` into one line on
stderr and exit status 128 + signal (130 for SIGINT, 143 for SIGTERM), without a traceback.
Without ``interruptible``, Python's own handlers apply (KeyboardInterrupt still checkpoints).
"""

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT / SIGTERM ended the run (a BaseException, like KeyboardInterrupt, so that
    ``except Exception`` does not swallow it). ``saved``: the sweep checkpointed first."""

    def __init__(self, signum: int, saved: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = signum, saved


_installed = False  # our handlers are in place (inside interruptible)
_deferring = 0  # depth of deferred() blocks
_received: int | None = None  # the first signal received
_lock = threading.Lock()


def requested() -> int | None:
    """The signal that asked the running sweep to stop, or None."""
    return _received


def _handle(signum: int, frame) -> None:
    global _received
    first = _received is None
    if first:
        _received = signum
    if not (first and _deferring):
        raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Inside: a first signal only sets ``requested()`` (the sweep polls it between chunks);
    on leaving, ``Interrupted(saved=True)`` if one came. A no-op outside ``interruptible``."""
    global _deferring
    if not _installed:
        yield
        return
    with _lock:
        _deferring += 1
    try:
        yield
    finally:
        with _lock:
            _deferring -= 1
    if _received is not None:
        raise Interrupted(_received, saved=True)


@contextmanager
def interruptible(hint: str = "continue with --resume") -> Iterator[None]:
    """Handle SIGINT / SIGTERM as the module docstring says; ``hint`` ends the message. On a
    thread other than the main one (where Python cannot install handlers) a no-op."""
    global _installed, _received
    if threading.current_thread() is not threading.main_thread() or _installed:
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _received, _installed = None, True
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    except Interrupted as e:
        name = signal.Signals(e.signum).name
        sys.stderr.write(f"interrupted by {name}" + (": checkpoints saved" if e.saved else "")
                         + f"; {hint}\n")
        raise SystemExit(128 + e.signum) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received, _installed = None, False

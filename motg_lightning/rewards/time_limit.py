"""A time limit on one call of untrusted code (a Reasoning-Gym scorer or a user's reward function).

A scorer that loops forever on a hostile completion must not stall a training run for hours. In a
process's main thread, where Lightning runs ``training_step``, SIGALRM interrupts the call
itself, even inside the regular-expression matcher. The alarm repeats until the call ends, and a
call during which it fired counts as overrun even when the code swallowed the exception (several
Reasoning-Gym scorers wrap their work in ``except Exception``; :class:`ScorerTimeout` is a
``BaseException`` for that reason, too).

Signals only reach the main thread, and a process has one real-time timer: elsewhere (a notebook
kernel's worker, the user's own thread pool), or while another timer or a handler installed from C
owns SIGALRM, the call runs in a daemon thread that is waited for at most ``seconds``; one that
overruns is abandoned — it keeps running in the background until it returns — and the caller
goes on.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
REPEAT_SECONDS = 0.05  # how soon the alarm fires again when the first one was swallowed


class ScorerTimeout(BaseException):
    """A scorer or reward function ran past its time limit (not an ``Exception``, so that code
    guarding its own work with ``except Exception`` does not swallow it)."""


def call_with_time_limit(function: Callable[[], T], seconds: float | None) -> T:
    """``function()``, raising :class:`ScorerTimeout` after ``seconds`` (None: no limit).

    What ``function`` raises is raised again, from either thread.
    """
    if seconds is None:
        return function()
    if _alarm_is_free():
        return _with_alarm(function, seconds)
    return _in_worker_thread(function, seconds)


def _alarm_is_free() -> bool:
    """True in the main thread when no other real-time timer runs and SIGALRM's handler is
    one Python can put back."""
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        and signal.getsignal(signal.SIGALRM) is not None
    )


def _with_alarm(function: Callable[[], T], seconds: float) -> T:
    state = {"armed": True, "fired": False}

    def expire(signum, frame):
        state["fired"] = True
        if state["armed"]:
            raise ScorerTimeout(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_SECONDS)
        value = function()
    finally:
        # first, so a late alarm can no longer raise: CPython runs Python signal handlers at
        # function entries and backward jumps, and there is neither before this store
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if state["fired"]:  # the call swallowed the timeout and returned late
        raise ScorerTimeout(f"ran past {seconds} s")
    return value


def _in_worker_thread(function: Callable[[], T], seconds: float) -> T:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="motg-time-limited-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        log.warning("A call ran past %s s off the main thread; it is left running in the background.", seconds)
        raise ScorerTimeout(f"ran past {seconds} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]

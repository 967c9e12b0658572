"""A time limit on one call of untrusted code (a Reasoning-Gym scorer or a user's reward function).

A scorer that loops forever on a hostile completion must not stall a training run for hours. In a
process's main thread, where Lightning runs ``training_step``, SIGALRM interrupts the call
itself. Signals only reach the main thread, so elsewhere (a notebook kernel's worker, a thread
pool in the user's own loop) the call runs in a daemon thread that is waited for at most
``seconds``; one that overruns is abandoned — it keeps running in the background until it
returns — and the caller goes on.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ScorerTimeout(Exception):
    """A scorer or reward function ran past its time limit."""


def call_with_time_limit(function: Callable[[], T], seconds: float | None) -> T:
    """``function()``, raising :class:`ScorerTimeout` after ``seconds`` (None: no limit).

    What ``function`` raises is raised again, from either thread.
    """
    if seconds is None:
        return function()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(function, seconds)
    return _in_worker_thread(function, seconds)


def _with_alarm(function: Callable[[], T], seconds: float) -> T:
    def expire(signum, frame):
        raise ScorerTimeout(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return function()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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

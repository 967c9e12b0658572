"""A time limit that stops a hanging call in the main thread and abandons it elsewhere."""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from motg_lightning.rewards.time_limit import ScorerTimeout, call_with_time_limit


def hang():
    threading.Event().wait(60)
    return "finished"


def fail():
    raise KeyError("from the call")


def test_no_limit_and_a_quick_call_return_the_value():
    assert call_with_time_limit(lambda: 3, None) == 3
    assert call_with_time_limit(lambda: 4, 5.0) == 4


def test_the_main_thread_interrupts_the_call_and_restores_the_alarm_handler():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(ScorerTimeout, match="ran past 0.1 s"):
        call_with_time_limit(hang, 0.1)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "worker thread"])
def test_what_the_call_raises_is_raised_again(in_thread):
    run = lambda: call_with_time_limit(fail, 5.0)  # noqa: E731
    with pytest.raises(KeyError, match="from the call"):
        ThreadPoolExecutor(1).submit(run).result(timeout=30) if in_thread else run()


def test_off_the_main_thread_an_overrunning_call_is_abandoned():
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ScorerTimeout):
            pool.submit(call_with_time_limit, hang, 0.1).result(timeout=30)
        assert pool.submit(call_with_time_limit, lambda: 5, 0.1).result(timeout=30) == 5


def test_a_catastrophic_regular_expression_is_interrupted():
    """Scorers parse answers with regular expressions; backtracking inside the C matcher still ends."""
    import re

    with pytest.raises(ScorerTimeout):
        call_with_time_limit(lambda: re.match(r"(a+)+$", "a" * 40 + "b"), 0.2)


def swallowing_loop(seconds=3.0):
    """A scorer that guards each piece of its work with ``except Exception`` (several
    Reasoning-Gym scorers do) and would run for ``seconds``."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.01)
        except Exception:
            pass
    return 1.0


def swallowing_everything():
    try:
        threading.Event().wait(0.5)
    except BaseException:
        pass
    return 1.0


@pytest.mark.parametrize("function", [swallowing_loop, swallowing_everything], ids=["except Exception", "bare except"])
def test_a_timeout_the_call_swallows_still_counts(function):
    with pytest.raises(ScorerTimeout):
        call_with_time_limit(function, 0.1)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_running_timer_of_the_caller_is_left_alone():
    """A nested limit (or the user's own alarm) keeps its timer; the inner call uses a thread."""
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        with pytest.raises(ScorerTimeout):
            call_with_time_limit(hang, 0.1)
        assert 25.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

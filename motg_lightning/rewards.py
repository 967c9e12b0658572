"""Rewards of completions: answer extraction, Reasoning-Gym correctness and format terms.

The total reward is a weighted sum of named terms. Correctness comes from the entry's own
Reasoning-Gym scorer (``score_answer``), looked up by the entry's ``metadata.source_dataset`` so
items of composite datasets are scored by the task they came from. A scorer that raises scores 0
and is counted; the run goes on.
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from reasoning_gym import get_score_answer_fn
from reasoning_gym.utils import extract_answer
from torch import Tensor

_FORMAT = re.compile(r"</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
_XML_TAGS = ("</think>", "<answer>", "</answer>")

#: The reward of the paper's code: 2 × correctness, 0.5 for the format, 0.5 for 200-400 words,
#: and a small tag-count term.
PAPER_WEIGHTS = {"correctness": 2.0, "format": 0.5, "length": 0.5, "xml_count": 1.0}
#: Correctness plus a small format term: the default of this library.
DEFAULT_WEIGHTS = {"correctness": 1.0, "format": 0.2}


def final_answer(completion: str) -> str | None:
    """The text of the last ``<answer>…</answer>`` block (``reasoning_gym.utils.extract_answer``);
    when an unclosed ``<answer>`` came before it, the part after the innermost opening tag."""
    answer = extract_answer(completion)
    return answer.rsplit("<answer>", 1)[-1] if answer is not None else None


def format_reward(completion: str) -> float:
    """1 if the completion closes its thinking and ends with one answer block, else 0."""
    return 1.0 if _FORMAT.search(completion) else 0.0


def length_reward(completion: str, min_words: int = 200, max_words: int = 400) -> float:
    """1 if the completion has between ``min_words`` and ``max_words`` words (paper's code)."""
    return 1.0 if min_words <= len(completion.split()) <= max_words else 0.0


def xml_count_reward(completion: str) -> float:
    """0.125 per closing/answer tag that appears exactly once, minus 0.001 per character written
    after ``</answer>`` (in the spirit of the paper's tag-count term; ``<think>`` is prefilled)."""
    score = sum(0.125 for tag in _XML_TAGS if completion.count(tag) == 1)
    if "</answer>" in completion:
        score -= 0.001 * len(completion.rsplit("</answer>", 1)[1].strip())
    return score


class ScorerTimeout(Exception):
    """A scorer ran past its time limit."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`ScorerTimeout` in the block after ``seconds`` (SIGALRM; only in the main
    thread of a process, where training runs; elsewhere, and for None, no limit)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise ScorerTimeout(f"scorer ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class RewardOutput:
    """Rewards of ``N`` completions: ``total`` and each ``terms[name]`` are ``[N]`` tensors;
    ``correct`` is a score of exactly 1; ``scorer_errors`` counts scorers that raised."""

    total: Tensor
    terms: dict[str, Tensor]
    correct: Tensor
    scorer_errors: int


class RewardFunction:
    """Weighted sum of reward terms.

    Args:
        weights: weight per term; terms are ``correctness`` (Reasoning-Gym score in [0, 1] of the
            last ``<answer>…</answer>``), ``format`` (:func:`format_reward`), ``length``
            (:func:`length_reward`) and ``xml_count`` (:func:`xml_count_reward`). Terms left out
            are not computed.
        preset: ``paper`` starts from :data:`PAPER_WEIGHTS` (Jain & Rappazzo's code), ``default``
            from :data:`DEFAULT_WEIGHTS`; ``weights`` then overrides single terms.
        scorer_timeout: seconds a Reasoning-Gym scorer may take for one answer; one that raises
            or runs longer scores 0 and is counted in ``scorer_errors``. None: no limit.
    """

    TERMS: dict[str, Callable[[str], float]] = {
        "format": format_reward,
        "length": length_reward,
        "xml_count": xml_count_reward,
    }

    def __init__(
        self, weights: dict[str, float] | None = None, preset: Literal["default", "paper"] = "default",
        scorer_timeout: float | None = 10.0,
    ):
        if scorer_timeout is not None and not scorer_timeout > 0:
            raise ValueError(f"reward scorer_timeout={scorer_timeout}: must be > 0 seconds, or null for no limit.")
        self.scorer_timeout = scorer_timeout
        base = PAPER_WEIGHTS if preset == "paper" else DEFAULT_WEIGHTS
        self.weights = {**base, **(weights or {})}
        unknown = sorted(set(self.weights) - set(self.TERMS) - {"correctness"})
        if unknown:
            valid = ", ".join(["correctness", *self.TERMS])
            raise ValueError(f"reward weights name unknown terms {unknown}; valid terms are: {valid}.")
        self._scorers: dict[str, Callable[[str | None, dict], float]] = {}

    def __repr__(self) -> str:
        return f"RewardFunction(weights={self.weights!r})"

    def score(self, answer: str | None, entry: dict[str, Any]) -> float:
        """Reasoning-Gym score of one answer; raises what the scorer raises."""
        name = entry["metadata"]["source_dataset"]
        if name not in self._scorers:
            self._scorers[name] = get_score_answer_fn(name)
        return float(self._scorers[name](answer, entry))

    def __call__(self, completions: list[str], entries: list[dict[str, Any]]) -> RewardOutput:
        terms: dict[str, list[float]] = {name: [] for name in self.weights}
        errors = 0
        for completion, entry in zip(completions, entries, strict=True):
            if "correctness" in terms:
                try:
                    with time_limit(self.scorer_timeout):
                        score = self.score(final_answer(completion), entry)
                except Exception:  # a scorer bug or hang must not end a run: score 0 and count it
                    score, errors = 0.0, errors + 1
                terms["correctness"].append(score)
            for name, term in self.TERMS.items():
                if name in terms:
                    terms[name].append(term(completion))
        tensors = {name: torch.tensor(values, dtype=torch.float32) for name, values in terms.items()}
        total = sum(self.weights[name] * value for name, value in tensors.items())
        correctness = tensors.get("correctness", torch.zeros(len(completions)))
        return RewardOutput(total=total, terms=tensors, correct=correctness == 1.0, scorer_errors=errors)

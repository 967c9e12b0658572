"""Rewards of completions: answer extraction, Reasoning-Gym correctness and format terms.

The total reward is a weighted sum of named terms. Correctness comes from the entry's own
Reasoning-Gym scorer (``score_answer``), looked up by the entry's ``metadata.source_dataset`` so
items of composite datasets are scored by the task they came from. Users add their own terms as
TRL-style reward functions. A scorer or reward function that raises, hangs past the time limit or
returns a non-number scores 0 and is counted; the run goes on.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from reasoning_gym import get_score_answer_fn
from reasoning_gym.utils import extract_answer
from torch import Tensor

from .time_limit import ScorerTimeout, call_with_time_limit

log = logging.getLogger(__name__)

_FORMAT = re.compile(r"</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
_XML_TAGS = ("</think>", "<answer>", "</answer>")

#: The reward of the paper's code: 2 × correctness, 0.5 for the format, 0.5 for 200-400 words,
#: and a small tag-count term.
PAPER_WEIGHTS = {"correctness": 2.0, "format": 0.5, "length": 0.5, "xml_count": 1.0}
#: Correctness plus a small format term: the default of this library.
DEFAULT_WEIGHTS = {"correctness": 1.0, "format": 0.2}


def task_of(entry: dict[str, Any]) -> str:
    """The task an entry came from (its ``metadata.source_dataset``); ``questions`` for a
    question without one (a JSONL file of questions to predict)."""
    return (entry.get("metadata") or {}).get("source_dataset", "questions")


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


#: A TRL-style reward function: called once per batch as ``function(prompts=…, completions=…,
#: question=…, answer=…, metadata=…)`` (the Reasoning-Gym entry's fields, one list item per
#: completion) and returning one float (or None, scored 0) per completion.
RewardFunc = Callable[..., list[float | None]]


@dataclass
class RewardOutput:
    """Rewards of ``N`` completions: ``total`` and each ``terms[name]`` are ``[N]`` tensors;
    ``correct`` is a score of exactly 1; ``reward_errors`` counts the scores set to 0 because a
    scorer or reward function raised, ran past its time limit or returned a non-number."""

    total: Tensor
    terms: dict[str, Tensor]
    correct: Tensor
    reward_errors: int


class RewardFunction:
    """Weighted sum of reward terms.

    Args:
        weights: finite weight per term; terms are `correctness` (Reasoning-Gym score in [0, 1]
            of the last `<answer>…</answer>`), `format` (1 for a closed thinking phase followed by
            one answer block), `length` (1 for 200 to 400 words), `xml_count` (0.125 per tag seen
            once, less 0.001 per character after `</answer>`) and the names of `reward_funcs`.
            Built-in terms left out are not computed; a reward function left out has weight 1.
        preset: `paper` starts from the paper code's weights (2 × correctness, 0.5 × format,
            0.5 × length, 1 × xml_count; Jain & Rappazzo), `default` from correctness + 0.2 ×
            format; `weights` then overrides single terms.
        scorer_timeout: seconds one Reasoning-Gym scorer call (one answer) or one reward function
            call (one batch) may take, > 0. One that raises or runs longer scores 0 and is
            counted in `train/reward_errors`. None: no limit.
        reward_funcs: extra terms by name, each a function called as
            `function(prompts=, completions=, question=, answer=, metadata=)` that returns one
            float per completion (TRL's `reward_funcs` convention); in YAML an import path such
            as `my_package.rewards.brevity`.
    """

    TERMS: dict[str, Callable[[str], float]] = {
        "format": format_reward,
        "length": length_reward,
        "xml_count": xml_count_reward,
    }

    def __init__(
        self, weights: dict[str, float] | None = None, preset: Literal["default", "paper"] = "default",
        scorer_timeout: float | None = 10.0, reward_funcs: dict[str, RewardFunc] | None = None,
    ):
        if scorer_timeout is not None and not scorer_timeout > 0:
            raise ValueError(f"model.reward.scorer_timeout={scorer_timeout}: must be > 0 seconds, or null for no limit.")
        self.scorer_timeout = scorer_timeout
        self.reward_funcs = dict(reward_funcs or {})
        built_in = ["correctness", *self.TERMS]
        clashes = sorted(set(self.reward_funcs) & set(built_in))
        if clashes:
            raise ValueError(f"model.reward.reward_funcs: {clashes} are built-in terms; give the functions other names.")
        base = PAPER_WEIGHTS if preset == "paper" else DEFAULT_WEIGHTS
        self.weights = {**base, **{name: 1.0 for name in self.reward_funcs}, **(weights or {})}
        unknown = sorted(set(self.weights) - set(built_in) - set(self.reward_funcs))
        if unknown:
            valid = ", ".join([*built_in, *self.reward_funcs])
            raise ValueError(f"model.reward.weights: unknown terms {unknown}; valid terms are: {valid} "
                             "(add your own through model.reward.reward_funcs).")
        infinite = {name: weight for name, weight in self.weights.items() if not math.isfinite(weight)}
        if infinite:
            raise ValueError(f"model.reward.weights={infinite}: each weight must be a finite number.")
        for name, function in self.reward_funcs.items():
            _check_signature(name, function)
        self._scorers: dict[str, Callable[[str | None, dict], float]] = {}
        self._failed_terms: set[str] = set()  # terms whose failure has been reported

    def __repr__(self) -> str:
        return f"RewardFunction(weights={self.weights!r})"

    def score(self, answer: str | None, entry: dict[str, Any]) -> float:
        """Reasoning-Gym score of one answer; raises what the scorer raises."""
        name = entry["metadata"]["source_dataset"]
        if name not in self._scorers:
            self._scorers[name] = get_score_answer_fn(name)
        score = _as_score(self._scorers[name](answer, entry))
        if score is None:
            raise ValueError(f"the {name} scorer returned a non-finite or non-numeric score")
        return score

    def _guarded(self, name: str, call: Callable[[], Any]) -> tuple[Any, bool]:
        """``call()`` under the time limit, or None and True when it raised or ran over."""
        try:
            return call_with_time_limit(call, self.scorer_timeout), False
        except (Exception, ScorerTimeout) as error:  # a scorer bug or hang must not end a run
            if name not in self._failed_terms:  # reported once; every failure is counted in reward_errors
                self._failed_terms.add(name)
                log.warning("Reward term %s failed (%r): scored 0; later failures are only counted "
                            "(train/reward_errors).", name, error)
            return None, True

    def _reward_func_scores(self, name: str, completions: list[str], entries: list[dict[str, Any]]) -> tuple[list[float], int]:
        def call() -> list:
            values = list(self.reward_funcs[name](**_columns(completions, entries)))
            if len(values) != len(completions):
                raise ValueError(f"returned {len(values)} values for {len(completions)} completions")
            return values

        values, failed = self._guarded(name, call)
        if failed:
            return [0.0] * len(completions), len(completions)
        scores = [_as_score(value) for value in values]
        invalid = sum(score is None and value is not None for score, value in zip(scores, values))  # None: not applicable
        return [0.0 if score is None else score for score in scores], invalid

    def __call__(self, completions: list[str], entries: list[dict[str, Any]]) -> RewardOutput:
        if len(completions) != len(entries):
            raise ValueError(f"{len(completions)} completions for {len(entries)} entries: give one entry per completion.")
        terms: dict[str, list[float]] = {}
        errors = 0
        if "correctness" in self.weights:
            terms["correctness"] = []
            for completion, entry in zip(completions, entries):
                score, failed = self._guarded("correctness", lambda: self.score(final_answer(completion), entry))
                terms["correctness"].append(0.0 if failed else score)
                errors += failed
        for name, term in self.TERMS.items():
            if name in self.weights:
                terms[name] = [term(completion) for completion in completions]
        for name in self.reward_funcs:
            terms[name], failures = self._reward_func_scores(name, completions, entries)
            errors += failures
        tensors = {name: torch.tensor(values, dtype=torch.float32) for name, values in terms.items()}
        total = sum((self.weights[name] * value for name, value in tensors.items()), torch.zeros(len(completions)))
        correctness = tensors.get("correctness", torch.zeros(len(completions)))
        return RewardOutput(total=total, terms=tensors, correct=correctness == 1.0, reward_errors=errors)


def _columns(completions: list[str], entries: list[dict[str, Any]]) -> dict[str, list]:
    """The keyword arguments of a reward function: the completions and the entries' fields."""
    columns = {key: [entry.get(key) for entry in entries] for key in ("question", "answer", "metadata")}
    return {"prompts": columns["question"], "completions": completions, **columns}


def _check_signature(name: str, function: RewardFunc) -> None:
    """Refuse, at construction, a reward function that cannot take the columns it will be given."""
    try:
        parameters = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have no signature; they are called as they are
        return
    try:
        parameters.bind(**_columns([], []))
    except TypeError as error:
        raise ValueError(
            f"model.reward.reward_funcs[{name}]: {error}; it is called as function(prompts=, completions=, question=, "
            "answer=, metadata=), one list item per completion: declare the ones it uses and **kwargs."
        ) from None


_LARGEST_REWARD = torch.finfo(torch.float32).max  # rewards are float32 tensors


def _as_score(value: Any) -> float | None:
    """A float that stays finite as a float32, or None for None, non-numbers, NaN, infinities and
    numbers too large (an integer beyond float range, 1e300)."""
    try:
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return score if math.isfinite(score) and abs(score) <= _LARGEST_REWARD else None

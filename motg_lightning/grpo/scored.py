"""One value for what a training step rolls out and scores (:class:`ScoredRollout`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..rewards.scoring import RewardOutput, task_of
from ..rollout.record import Rollout, concatenate


@dataclass
class ScoredRollout:
    """Rollouts of a batch of prompts (each repeated for its group) with their texts and rewards.

    Attributes:
        rollout: the recorded trajectories, ``N`` rows.
        completions: the ``N`` completion texts.
        entries: the ``N`` dataset entries the completions answer (question, answer, task).
        rewards: the ``N`` rewards.
        seconds: time spent generating.
        rounds: rollouts it took (more than 1 under dynamic sampling).
        rolled_out: set by dynamic sampling: the task and correctness of every completion the
            step rolled out, the dropped groups' too (see :attr:`outcomes`).
    """

    rollout: Rollout
    completions: list[str]
    entries: list[dict[str, Any]]
    rewards: RewardOutput
    seconds: float
    rounds: int = 1
    rolled_out: tuple[list[str], torch.Tensor] | None = None

    @property
    def tasks(self) -> list[str]:
        """The Reasoning-Gym task of each row (its entry's ``metadata.source_dataset``)."""
        return [task_of(entry) for entry in self.entries]

    @property
    def outcomes(self) -> tuple[list[str], torch.Tensor]:
        """The task and correctness (a score of exactly 1) of every completion rolled out for the
        step: the training accuracy, also over groups dynamic sampling dropped for having no
        reward variance (all right or all wrong)."""
        return self.rolled_out if self.rolled_out is not None else (self.tasks, self.rewards.correct)

    def select(self, rows: list[int]) -> ScoredRollout:
        """The given rows, in order."""
        index = torch.tensor(rows, dtype=torch.long)
        rewards = self.rewards
        terms = {name: value[index] for name, value in rewards.terms.items()}
        return replace(
            self, rollout=self.rollout.select(index.to(self.rollout.tokens.device)),
            completions=[self.completions[r] for r in rows], entries=[self.entries[r] for r in rows],
            rewards=RewardOutput(rewards.total[index], terms, rewards.correct[index], rewards.reward_errors),
        )

    @staticmethod
    def concatenate(parts: list[ScoredRollout], seconds: float, rounds: int) -> ScoredRollout:
        """The rows of ``parts`` one after the other (scorer errors summed)."""
        rewards = [part.rewards for part in parts]
        return ScoredRollout(
            rollout=concatenate([part.rollout for part in parts]),
            completions=[text for part in parts for text in part.completions],
            entries=[entry for part in parts for entry in part.entries],
            rewards=RewardOutput(
                total=torch.cat([r.total for r in rewards]),
                terms={name: torch.cat([r.terms[name] for r in rewards]) for name in rewards[0].terms},
                correct=torch.cat([r.correct for r in rewards]),
                reward_errors=sum(r.reward_errors for r in rewards),
            ),
            seconds=seconds, rounds=rounds,
        )

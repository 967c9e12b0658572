"""Evaluation rollouts and their metrics: accuracy, mean@k, pass@k, format rate and length.

``validate`` and ``test`` roll out each held-out question ``k`` times with the chosen decoding
(the training mixture rule, ordinary sampling, or greedy) and report, per task and over all
questions, through torchmetrics (so values are synchronised across processes):

* ``accuracy``: the first sample is correct (mean@1);
* ``mean@k``: the fraction of the ``k`` samples that are correct;
* ``pass@k``: at least one of the ``k`` samples is correct (Chen et al., arXiv 2107.03374, with
  ``n = k`` samples);
* ``format_rate``: the fraction of samples that close their thinking and end with one answer;
* ``completion_length``: mean completion tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ..rules.paper import Discrete, Greedy
from ..rules.base import MixtureRule

EvalDecoding = Literal["mixture", "sample", "greedy"]
OVERALL = "all"


def evaluation_rule(decoding: EvalDecoding, training_rule: MixtureRule) -> MixtureRule:
    """The rule evaluation rolls out with: the training rule itself, discrete sampling at its
    temperature, or greedy decoding."""
    if decoding == "mixture":
        return training_rule
    if decoding == "sample":
        return Discrete(temperature=training_rule.temperature)
    if decoding == "greedy":
        return Greedy()
    raise ValueError(f"model.evaluation.decoding={decoding!r}: choose mixture, sample or greedy.")


class EvaluationMetrics(nn.Module):
    """Running means of the evaluation metrics, per task and over all questions."""

    def __init__(self, samples: int):
        super().__init__()
        self.samples = samples
        self.means = nn.ModuleDict()

    def names(self) -> list[str]:
        return ["accuracy", f"mean@{self.samples}", f"pass@{self.samples}", "format_rate", "completion_length"]

    def _metric(self, task: str, name: str, device: torch.device) -> MeanMetric:
        key = f"{task}/{name}".replace(".", "_")  # module names may not contain dots
        if key not in self.means:
            self.means[key] = MeanMetric().to(device)
        return self.means[key]

    def register(self, tasks: list[str], device: torch.device) -> None:
        """Create every metric up front (each process must hold the same ones to synchronise)."""
        for task in [*tasks, OVERALL]:
            for name in self.names():
                self._metric(task, name, device)

    def update(self, tasks: list[str], correct: Tensor, formatted: Tensor, lengths: Tensor) -> None:
        """``correct``, ``formatted``, ``lengths``: ``[questions, k]`` for the questions of ``tasks``."""
        values = {
            "accuracy": correct[:, 0].float(),
            f"mean@{self.samples}": correct.float().mean(-1),
            f"pass@{self.samples}": correct.any(-1).float(),
            "format_rate": formatted.float().mean(-1),
            "completion_length": lengths.float().mean(-1),
        }
        for row, task in enumerate(tasks):
            for name, value in values.items():
                for key in (task, OVERALL):
                    self._metric(key, name, value.device).update(value[row])

    def compute(self, prefix: str) -> dict[str, Tensor]:
        """``{prefix}/{metric}`` over all questions and ``{prefix}/{metric}/{task}`` per task."""
        results = {}
        for key, metric in self.means.items():
            if not metric.update_called:
                continue
            task, name = key.split("/", 1)
            results[f"{prefix}/{name}" if task == OVERALL else f"{prefix}/{name}/{task}"] = metric.compute()
        return results

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()

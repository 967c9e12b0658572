"""Top-p and min-p filters of the sampling distribution, applied to every rule.

Soft Thinking (Zhang et al., arXiv 2505.15778) filters the next-token distribution with top-p
(nucleus, Holtzman et al., arXiv 1904.09751) and min-p (Nguyen et al., arXiv 2407.01082) before
mixing. Here the filtered distribution is what every rule samples and mixes from, in both phases,
and a rollout records each step's likelihood under it (the distribution the step was drawn from).

The loss scores steps under the unfiltered tempered distribution by default, as TRL does for its
``top_p``/``min_p`` options; its issue 6789 shows that this biases the importance ratio, whose
samples come from the filtered one. ``model.grpo.loss_distribution: filtered`` scores under the
filtered distribution instead (:meth:`SamplingFilter.restrict` with the recorded step kept), so
that at θ = θ_old the ratio to the sampling distribution is exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import MixtureStep


def validate_filters(top_p: float, min_p: float | None, owner: str = "model") -> None:
    """Raise a message naming the field when a filter setting is out of range."""
    if not 0 < top_p <= 1:
        raise ValueError(f"{owner}.top_p={top_p}: must be in (0, 1]; 1.0 keeps the whole distribution.")
    if min_p is not None and not 0 <= min_p < 1:
        raise ValueError(f"{owner}.min_p={min_p}: must be in [0, 1); null disables the filter.")


def recorded_ids(step: MixtureStep) -> Tensor:
    """``[..., k + 1]`` the ids a recorded step drew or fed: its token and the support slots with
    weight (a slot without weight stands in as the token). Every rule gives a positive weight to
    each slot its likelihood scores (Dirichlet, Gumbel and Latent-GRPO hold a scored slot's weight
    at least at the smallest normal float)."""
    slots = torch.where(step.weights > 0, step.support, step.token.unsqueeze(-1))
    return torch.cat([slots, step.token.unsqueeze(-1)], dim=-1)


@dataclass(frozen=True)
class SamplingFilter:
    """The top-p and min-p filters of a distribution (either may be off).

    Attributes:
        top_p: keep the smallest set of most probable tokens whose mass reaches it; 1.0 is off.
        min_p: keep the tokens at least this times as probable as the most probable; None is off.
    """

    top_p: float = 1.0
    min_p: float | None = None

    @property
    def active(self) -> bool:
        """Whether any filter removes tokens."""
        return self.top_p < 1.0 or bool(self.min_p)

    def removed(self, log_probs: Tensor) -> Tensor | None:
        """``[..., V]`` the tokens of ``[..., V]`` log-probabilities the filters remove (the most
        probable token always survives); None when no filter is active."""
        if not self.active:
            return None
        log_probs = log_probs.detach()  # a mask: no autograd record of the sort over the vocabulary
        removed = torch.zeros_like(log_probs, dtype=torch.bool)
        if self.min_p:
            threshold = log_probs.max(-1, keepdim=True).values + math.log(self.min_p)
            removed |= log_probs < threshold
        if self.top_p < 1.0:
            sorted_log_probs, order = log_probs.sort(-1, descending=True)
            probs = sorted_log_probs.exp()
            mass_before = probs.cumsum(-1) - probs
            removed |= torch.zeros_like(removed).scatter(-1, order, mass_before >= self.top_p)
        return removed

    @staticmethod
    def restrict(log_probs: Tensor, removed: Tensor | None, keep: Tensor | None = None) -> Tensor:
        """``log_probs`` without the ``removed`` tokens, renormalised (unchanged, the same tensor,
        when ``removed`` is None). ``keep``: ``[..., m]`` ids that stay whatever ``removed`` says,
        so that a recorded step (a forced token, or a token an update moved out of the filter)
        keeps a finite likelihood."""
        if removed is None:
            return log_probs
        if keep is not None:
            removed = removed.scatter(-1, keep, False)
        return torch.log_softmax(log_probs.masked_fill(removed, float("-inf")), dim=-1)

    def apply(self, log_probs: Tensor, keep: Tensor | None = None) -> Tensor:
        """The filtered, renormalised ``[..., V]`` log-probabilities (see :meth:`restrict`)."""
        return self.restrict(log_probs, self.removed(log_probs), keep)


"""Latent-GRPO's two stabilisers of the advantages (arXiv 2604.27998), as its released code does
them; each is a GRPO option (``model.grpo.mask_invalid_advantages``, ``model.grpo.best_first_step``).

* Invalid samples: a truncated completion (one that hit ``max_new_tokens``, the code's test of an
  invalid sample) gets advantage 0 and is left out of its group's mean and std
  (:func:`motg_lightning.grpo.loss.group_advantages` with ``valid``).
* The best correct path's first step: latent mixtures are not closed under averaging, so
  reinforcing several correct first steps of one group pushes the first input towards a mixture
  none of them was. Of each group's rollouts with a positive advantage, only the one the policy
  found most likely (the highest mean step log-likelihood) trains its first step; as in the
  paper's code, no other member of the group does, whatever its advantage.
"""

from __future__ import annotations

import torch
from torch import Tensor


def best_first_steps(advantages: Tensor, log_likelihood: Tensor, mask: Tensor, group_size: int) -> Tensor:
    """``[N]`` whether each rollout trains its first step: in each group with a positive
    advantage and counted steps, only the rollout of highest mean ``log_likelihood`` (``[N, T]``,
    over its ``mask`` steps) among those, and no other of the group, positive or negative (as the
    paper's code zeroes every other member's first-step advantage); in a group without, every rollout."""
    counted = mask.sum(-1)
    mean = (log_likelihood * mask).sum(-1) / counted.clamp_min(1)
    positive = ((advantages > 0) & (counted > 0)).reshape(-1, group_size)
    candidates = torch.where(positive, mean.reshape(-1, group_size), float("-inf"))
    best = torch.zeros_like(positive).scatter(-1, candidates.argmax(-1, keepdim=True), True)
    return torch.where(positive.any(-1, keepdim=True), best, True).reshape(-1)

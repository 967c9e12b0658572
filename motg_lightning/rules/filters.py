"""Top-p and min-p filters of the sampling distribution, applied to every rule.

Soft Thinking (Zhang et al., arXiv 2505.15778) filters the next-token distribution with top-p
(nucleus, Holtzman et al., arXiv 1904.09751) and min-p (Nguyen et al., arXiv 2407.01082) before
mixing. Here the filtered distribution is what every rule samples and mixes from, in both phases,
while the likelihood of a step is taken under the unfiltered tempered distribution, as TRL does
for its ``top_p``/``min_p`` generation options: a filtered loss distribution would give a step
``−∞`` log-likelihood as soon as an update moved it out of the nucleus.
"""

from __future__ import annotations

import torch
from torch import Tensor


def validate_filters(top_p: float, min_p: float | None, owner: str = "model") -> None:
    """Raise a message naming the field when a filter setting is out of range."""
    if not 0 < top_p <= 1:
        raise ValueError(f"{owner}.top_p={top_p}: must be in (0, 1]; 1.0 keeps the whole distribution.")
    if min_p is not None and not 0 <= min_p < 1:
        raise ValueError(f"{owner}.min_p={min_p}: must be in [0, 1); null disables the filter.")


def filter_log_probs(log_probs: Tensor, top_p: float = 1.0, min_p: float | None = None) -> Tensor:
    """``[..., V]`` log-probabilities restricted to the tokens both filters keep, renormalised.

    top-p keeps the smallest set of most probable tokens whose mass reaches ``top_p``; min-p keeps
    tokens whose probability is at least ``min_p`` times the most probable one's. The most probable
    token always survives. Unchanged (the same tensor) when neither filter is active.
    """
    if top_p >= 1.0 and not min_p:
        return log_probs
    removed = torch.zeros_like(log_probs, dtype=torch.bool)
    if min_p:
        threshold = log_probs.max(-1, keepdim=True).values + torch.log(torch.tensor(min_p))
        removed |= log_probs < threshold
    if top_p < 1.0:
        sorted_log_probs, order = log_probs.sort(-1, descending=True)
        probs = sorted_log_probs.exp()
        mass_before = probs.cumsum(-1) - probs
        removed |= torch.zeros_like(removed).scatter(-1, order, mass_before >= top_p)
    return torch.log_softmax(log_probs.masked_fill(removed, float("-inf")), dim=-1)

"""Sampler and log-density of the Dirichlet weights of :class:`motg_lightning.rules.Dirichlet`,
over the slots a top-p / min-p filter kept (CoT2's density, arXiv 2505.23648)."""

from __future__ import annotations

import torch
from torch import Tensor


def log_gamma_sample(concentration: Tensor) -> Tensor:
    """``log G`` with ``G ~ Gamma(a, 1)``, drawn as ``log Gamma(a + 1, 1) + log(U) / a``
    (Marsaglia and Tsang's boost), so it stays finite and exact where ``G`` itself would underflow
    (``a`` of 0.01 gives ``G`` below the smallest float about a third of the time). No argument
    checks, which would ask the device for a value every decode step."""
    boosted = torch.distributions.Gamma(concentration + 1.0, 1.0, validate_args=False).sample()
    uniform = torch.rand_like(concentration).clamp_min(torch.finfo(concentration.dtype).tiny)
    return torch.log(boosted) + torch.log(uniform) / concentration


def dirichlet_log_density(weights: Tensor, concentration: Tensor, kept: Tensor) -> Tensor:
    """``log Dirichlet(w; a)`` over the ``kept`` slots of ``[..., k]`` weights (which sum to one
    there): ``log Γ(Σ a) − Σ log Γ(a) + Σ (a − 1) log w``, equal to ``torch.distributions.Dirichlet``
    when every slot is kept. A single kept slot has density 1 (log 0)."""
    concentration = concentration.masked_fill(~kept, 1.0)  # a = 1 and log w = 0 add nothing
    log_weights = torch.log(weights.masked_fill(~kept, 1.0))
    normaliser = torch.lgamma((concentration * kept).sum(-1)) - (torch.lgamma(concentration) * kept).sum(-1)
    return normaliser + ((concentration - 1.0) * log_weights).sum(-1)

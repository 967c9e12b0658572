"""Mixture rules of related soft-token RL methods, each with the step likelihood its paper trains.

* :class:`Gumbel` -- SofT-GRPO (arXiv 2511.06411): Gumbel-perturbed top-k log-probabilities
  through a tempered softmax; the likelihood is the Gumbel density of the perturbed values.
* :class:`Multiplex` -- Multiplex Thinking (arXiv 2601.08808) and CoT2's multi-token sampling
  (arXiv 2505.23648): K i.i.d. samples; the likelihood is the sum of their log-probabilities.
* :class:`LatentGRPO` -- Latent-GRPO (arXiv 2604.27998): the top k of the log-probabilities plus
  one-sided Gumbel noise; the likelihood is its Gumbel top-k log-density.

(The Dirichlet density of CoT2 is ``Dirichlet(likelihood="density")`` in :mod:`.paper`.)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .base import (
    Likelihood,
    MixtureRule,
    MixtureStep,
    draw_representative,
    gumbel_noise_like,
    kept_log_probs,
    positive_on,
    renormalise,
    sample_index,
)
from .filters import SamplingFilter


def gumbel_log_density(values: Tensor, location: Tensor) -> Tensor:
    """``log f(z; μ, 1) = −(z − μ) − exp(−(z − μ))`` of a standard-scale Gumbel, elementwise."""
    shifted = values - location
    return -shifted - torch.exp(-shifted)


def recorded_gumbel_log_density(perturbed: Tensor, location: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., k]`` the log-density of each slot's recorded perturbed value around ``location``,
    0 on the slots never perturbed (recorded ``-inf``: a top-p / min-p filter removed them), and
    those that were. Finite stand-ins on the others keep ``inf − inf`` out of the gradient."""
    kept = torch.isfinite(perturbed)
    density = gumbel_log_density(perturbed.masked_fill(~kept, 0.0), location.masked_fill(~kept, 0.0))
    return density * kept, kept


class Gumbel(MixtureRule):
    """SofT-GRPO's rule: support the top k of p; z = log q + g with q = p renormalised
    on the support and g ~ Gumbel(0, 1); weights softmax(z / gumbel_temperature); the
    representative token is argmax z (a Gumbel-max sample of q).

    The likelihood (``likelihood="density"``) is ``Σ_i log Gumbel(z_i; log q_θ,i, 1)``, the
    density of the recorded perturbed values under the current policy; ``z`` is kept in
    ``extras["perturbed"]``. The recorded ``z`` is data: its gradient reaches the policy through
    ``log q_θ``, and the mixed inputs of later steps are fed without gradient into the embedding
    matrix, as SofT-GRPO does (:attr:`Gumbel.detaches_inputs`; this drops the path through the
    inputs that an exact score function would keep). Under a top-p /
    min-p filter, slots the filter removed are recorded as ``-inf`` and left out of the density,
    whose ``q`` is renormalised on the kept slots (the sampling distribution at θ = θ_old).

    Args:
        likelihood: `density` (the default): the Gumbel density above, SofT-GRPO's; or
            `representative` / `weighted`, as for every rule.
        gumbel_temperature: τ_g > 0 of the softmax over perturbed log-probabilities.
    """

    LIKELIHOODS = ("density", "representative", "weighted")
    #: SofT-GRPO feeds the mixed inputs without gradient into the embedding matrix
    DENSITY_INPUTS_ARE_DATA = True

    def __init__(
        self, k: int = 3, temperature: float = 1.0, likelihood: Likelihood = "density", gumbel_temperature: float = 0.5
    ):
        super().__init__(k, temperature, likelihood)
        if not gumbel_temperature > 0:
            raise ValueError(f"model.mixture.gumbel_temperature={gumbel_temperature} (Gumbel): must be > 0.")
        self.gumbel_temperature = gumbel_temperature

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        top_log_probs, support = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1)
        log_q = torch.log_softmax(top_log_probs, dim=-1)  # -inf on slots a top-p / min-p filter removed
        perturbed = log_q + gumbel_noise_like(log_q)
        weights = positive_on(torch.softmax(perturbed / self.gumbel_temperature, dim=-1), torch.isfinite(perturbed))
        token = support.gather(-1, perturbed.argmax(-1, keepdim=True)).squeeze(-1)
        return MixtureStep(support, weights, token, {"perturbed": perturbed})

    def density_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``Σ_i log Gumbel(z_i; log q_θ,i, 1)`` of the recorded perturbed values."""
        # The density runs over the slots that were perturbed, with q renormalised on them, which
        # is the sampling distribution at θ_old.
        perturbed = step.extras["perturbed"]
        log_q = torch.log_softmax(kept_log_probs(log_probs, step.support, torch.isfinite(perturbed)), dim=-1)
        return recorded_gumbel_log_density(perturbed, log_q)[0].sum(-1)


class Multiplex(MixtureRule):
    """K tokens drawn i.i.d. from p (with replacement) and mixed, as in Multiplex Thinking and
    CoT2's multi-token sampling. k = 1 is ordinary sampling.

    The likelihood (``likelihood="sum"``) is ``Σ_i log π(S_i)``, the log-probability of the K
    independent draws (:meth:`MixtureRule.sum_log_likelihood`).

    Args:
        likelihood: `sum` (the default): Σ_i log π(S_i) of the K draws; or `representative` /
            `weighted`, as for every rule.
        weighting: `uniform` (1/K each) or `renormalised` (p renormalised on the draws).
    """

    LIKELIHOODS = ("sum", "representative", "weighted")

    def __init__(
        self, k: int = 3, temperature: float = 1.0, likelihood: Likelihood = "sum",
        weighting: Literal["uniform", "renormalised"] = "uniform",
    ):
        super().__init__(k, temperature, likelihood)
        if weighting not in ("uniform", "renormalised"):
            raise ValueError(f"model.mixture.weighting={weighting!r} (Multiplex): choose 'uniform' or 'renormalised'.")
        self.weighting = weighting

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        probs = log_probs.exp()
        support = torch.stack([sample_index(probs) for _ in range(self.k)], dim=-1)
        if self.weighting == "uniform":
            weights = torch.full(support.shape, 1.0 / self.k, device=probs.device)
        else:
            weights = renormalise(probs.gather(-1, support))
        return MixtureStep(support, weights, draw_representative(support, weights))


#: Latent-GRPO's bounds of a Gumbel draw before its shift to one side (its released code's)
LATENT_NOISE_RANGE = (-1.5, 3.0)
#: the most probable tokens Latent-GRPO's rule scores first, before sorting the whole vocabulary
NUCLEUS_CANDIDATES = 256


class LatentGRPO(MixtureRule):
    """Latent-GRPO's rule: scores s = log p + g̃ over p's nucleus (its smallest set of mass
    `nucleus`, and at least the top k), with one-sided noise ``g̃ = noise_scale · (clamp(g, −1.5,
    3) + 1.5) ≥ 0``, ``g ~ Gumbel(0, 1)``; the support is the k largest scores, the weights
    ``softmax(s / gumbel_temperature)`` over them, the representative the largest (a
    perturbed-argmax draw). The recorded scores are ``extras["perturbed"]``.

    The likelihood (``likelihood="density"``) is Latent-GRPO's Gumbel top-k log-density, the mean
    over the support of ``log Gumbel(s_i; log p_θ(S_i), 1)``, i.e. of the standard Gumbel density
    of each slot's implied noise ``s_i − log p_θ(S_i)``; as the paper's released code, it leaves
    the clamp, the shift and the scale of the noise out. Its mixed inputs are data to the loss, fed
    without gradient (as the code feeds ``inputs_embeds`` detached), like SofT-GRPO's.

    Args:
        k: the tokens mixed per step (the released scripts: 10).
        temperature: τ of p (the code's latent steps use the untempered log-probabilities: 1).
        likelihood: `density` (the default): the Gumbel top-k log-density above; or
            `representative` / `weighted`, as for every rule.
        gumbel_temperature: τ_g > 0 of the softmax over the scores (the scripts: 1.0).
        noise_scale: the noise's scale, >= 0 (the scripts: 1.0); 0 mixes the top k of p deterministically.
        nucleus: the mass in (0, 1] of p that scores are drawn within (the scripts: 0.95); 1 keeps all.
    """

    LIKELIHOODS = ("density", "representative", "weighted")
    #: the paper's code feeds the mixed inputs detached
    DENSITY_INPUTS_ARE_DATA = True

    def __init__(
        self, k: int = 10, temperature: float = 1.0, likelihood: Likelihood = "density", gumbel_temperature: float = 1.0,
        noise_scale: float = 1.0, nucleus: float = 0.95,
    ):
        super().__init__(k, temperature, likelihood)
        if not gumbel_temperature > 0:
            raise ValueError(f"model.mixture.gumbel_temperature={gumbel_temperature} (LatentGRPO): must be > 0.")
        if not noise_scale >= 0:
            raise ValueError(f"model.mixture.noise_scale={noise_scale} (LatentGRPO): must be >= 0 (the paper's scripts use 1.0).")
        if not 0 < nucleus <= 1:
            raise ValueError(f"model.mixture.nucleus={nucleus} (LatentGRPO): must be in (0, 1] (the paper's scripts use 0.95).")
        self.gumbel_temperature, self.noise_scale, self.nucleus = gumbel_temperature, noise_scale, nucleus

    def _outside_nucleus(self, log_probs: Tensor) -> Tensor:
        """``[..., V]`` the tokens past the nucleus (a top-p filter's), its top k always inside."""
        return SamplingFilter(top_p=self.nucleus).removed(log_probs).scatter(-1, log_probs.topk(self.k, dim=-1).indices, False)

    def _candidate_scores(self, log_probs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor] | None:
        """The scores of the :data:`NUCLEUS_CANDIDATES` most probable tokens and their ids, when no
        other token can be among the top k: every row's candidates hold the nucleus, or the least
        probable of them is below the k-th log-probability less the largest noise (noise is never
        negative, so no token below can outscore the top k). None otherwise, and under compile
        (the test reads a value) and off the CPU (where the sort it saves is cheap)."""
        count = min(NUCLEUS_CANDIDATES, log_probs.shape[-1])
        if torch.compiler.is_compiling() or log_probs.device.type != "cpu" or count < self.k:
            return None
        top, ids = log_probs.topk(count, dim=-1)  # sorted, most probable first
        probs = top.exp()
        low, high = LATENT_NOISE_RANGE
        reach = top[..., self.k - 1] - self.noise_scale * (high - low)
        if not ((probs.sum(-1) >= self.nucleus) | (top[..., -1] < reach)).all():
            return None
        inside = (probs.cumsum(-1) - probs < self.nucleus) | (torch.arange(count, device=top.device) < self.k)
        return (top + noise.gather(-1, ids)).masked_fill(~inside, float("-inf")), ids

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        low, high = LATENT_NOISE_RANGE
        noise = self.noise_scale * (gumbel_noise_like(log_probs).clamp(low, high) - low)  # over the vocabulary: the same draws either way
        k = min(self.k, log_probs.shape[-1])
        candidates = self._candidate_scores(log_probs, noise) if self.nucleus < 1.0 else None
        if candidates is not None:  # the same top k as below, without sorting the vocabulary
            scores, ids = candidates
            perturbed, slots = scores.topk(k, dim=-1)
            support = ids.gather(-1, slots)
        else:
            scores = log_probs + noise
            if self.nucleus < 1.0:
                scores = scores.masked_fill(self._outside_nucleus(log_probs), float("-inf"))
            perturbed, support = scores.topk(k, dim=-1)
        weights = positive_on(torch.softmax(perturbed / self.gumbel_temperature, dim=-1), torch.isfinite(perturbed))
        return MixtureStep(support, weights, support[..., 0], {"perturbed": perturbed})

    def density_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """The mean over the slots of ``log Gumbel(s_i; log p_θ(S_i), 1)``."""
        density, kept = recorded_gumbel_log_density(step.extras["perturbed"], log_probs.gather(-1, step.support))
        return density.sum(-1) / kept.sum(-1).clamp_min(1)

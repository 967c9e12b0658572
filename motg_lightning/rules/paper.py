"""The rules of "Learning to Reason with Mixture of Tokens" (Jain & Rappazzo, arXiv 2509.21482):
discrete sampling, top-k, Dirichlet, sampled, nucleus and element-wise max mixtures, and greedy
decoding for evaluation. Each is a :class:`~motg_lightning.rules.base.MixtureRule`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import (
    Likelihood, MixtureRule, MixtureStep, draw_representative, gumbel_noise_like, kept_log_probs, positive_on, renormalise,
    sample_index,
)
from .densities import dirichlet_log_density, log_gamma_sample


class Discrete(MixtureRule):
    """Standard decoding: one token sampled from p_t with weight 1 (the GRPO baseline)."""

    REPRESENTATIVE_IS_SAMPLE = True

    def __init__(self, temperature: float = 0.9):
        super().__init__(k=1, temperature=temperature, likelihood="representative")

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        token = sample_index(log_probs.exp())
        return MixtureStep(token.unsqueeze(-1), torch.ones_like(token, dtype=torch.float32).unsqueeze(-1), token)


class Greedy(MixtureRule):
    """Greedy decoding: the most probable token with weight 1, in both phases (evaluation)."""

    REPRESENTATIVE_IS_SAMPLE = True

    def __init__(self, temperature: float = 1.0):
        super().__init__(k=1, temperature=temperature, likelihood="representative")

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        token = log_probs.argmax(-1)
        return MixtureStep(token.unsqueeze(-1), torch.ones_like(token, dtype=torch.float32).unsqueeze(-1), token)


class TopK(MixtureRule):
    """Deterministic top-k mixture, weights p_t renormalised on the top k (Soft Thinking,
    arXiv 2505.15778; the paper's deterministic variant)."""

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        support, weights = self._top_k(log_probs)
        return MixtureStep(support, weights, draw_representative(support, weights))


class Dirichlet(MixtureRule):
    """Top-k support with weights w ~ Dirichlet(α q), q = p_t renormalised on the top k
    (the paper's main MoT-G rule, α = 1 in its code).

    With the `density` likelihood the recorded weights are data: the gradient reaches the policy
    through α q_θ, and through later steps' inputs `Σ w_i E[S_i]`, which are functions of the
    embedding matrix given w (the exact score function; `MixtureRule.detaches_inputs`). Under a
    top-p / min-p filter the Dirichlet runs over the top-k slots the filter kept (removed slots
    get weight 0), and the density over the same slots. The Gamma variates are drawn in log space
    (`log_gamma_sample`), so concentrations far below 1 do not underflow.

    Args:
        alpha: concentration scale α > 0; larger values keep w closer to q.
        min_concentration: floor (> 0) of α q so the Gamma sampler never sees 0 (which gives NaN).
        likelihood: besides `representative` and `weighted`, `density`: the log Dirichlet
            density of the recorded weights under α q_θ (CoT2, arXiv 2505.23648).
    """

    LIKELIHOODS = ("representative", "weighted", "density")

    def __init__(
        self,
        k: int = 2,
        temperature: float = 0.9,
        likelihood: Likelihood = "representative",
        alpha: float = 1.0,
        min_concentration: float = 1e-3,
    ):
        super().__init__(k, temperature, likelihood)
        if not alpha > 0:
            raise ValueError(f"model.mixture.alpha={alpha} (Dirichlet): must be > 0 (the paper uses 1.0).")
        if not min_concentration > 0:
            raise ValueError(f"model.mixture.min_concentration={min_concentration} (Dirichlet): must be > 0.")
        self.alpha = alpha
        self.min_concentration = min_concentration

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        support, q = self._top_k(log_probs)
        kept = q > 0  # slots a top-p / min-p filter removed have q = 0 and stay out of the mixture
        log_gammas = log_gamma_sample(self.concentration(log_probs, support, kept)).masked_fill(~kept, float("-inf"))
        weights = torch.softmax(log_gammas, dim=-1)  # w_i = G_i / Σ G over the kept slots
        # A kept slot keeps a positive weight, so ``weights > 0`` tells the density which slots were drawn.
        weights = renormalise(positive_on(weights, kept))
        return MixtureStep(support, weights, draw_representative(support, weights))

    def concentration(self, log_probs: Tensor, support: Tensor, kept: Tensor | None = None) -> Tensor:
        """``α q`` with ``q`` the distribution renormalised on the ``kept`` slots of ``support``
        (all when None), floored; slots not kept get the floor and must be masked by the caller."""
        q = torch.softmax(kept_log_probs(log_probs, support, kept), dim=-1)
        return (self.alpha * q).clamp_min(self.min_concentration)

    def density_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``log Dirichlet(w; α q_θ)`` of the recorded weights over the slots that were drawn."""
        kept = step.weights > 0
        return dirichlet_log_density(step.weights, self.concentration(log_probs, step.support, kept), kept)


class Sampled(MixtureRule):
    """k distinct tokens sampled from p_t without replacement, weights p_t renormalised
    on them (the paper's "different tokens" variant).

    Args:
        likelihood: `weighted` by default, the likelihood the paper's "different tokens" runs
            train with; `representative` scores the drawn text token alone.
    """

    def __init__(self, k: int = 2, temperature: float = 0.9, likelihood: Likelihood = "weighted"):
        super().__init__(k, temperature, likelihood)

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        # Gumbel-top-k: the k largest of log p + Gumbel noise are k draws without replacement
        # (Kool et al., arXiv 1903.06059). Unlike torch.multinomial it accepts a top-p / min-p
        # filtered distribution with fewer than k tokens left: the extra slots get weight 0.
        keys = log_probs + gumbel_noise_like(log_probs)
        support = keys.topk(min(self.k, log_probs.shape[-1]), dim=-1).indices
        weights = renormalise(log_probs.gather(-1, support).exp())
        return MixtureStep(support, weights, draw_representative(support, weights))


class Nucleus(MixtureRule):
    """Top-k cut where the cumulative mass first reaches `top_p`, weights renormalised (an
    option of the paper's code; the top-p filter of Soft Thinking, arXiv 2505.15778).

    The support keeps `k` slots; slots past the cut have weight 0.

    Args:
        top_p: probability mass in (0, 1] at which the top-k list is cut.
    """

    def __init__(self, k: int = 2, temperature: float = 0.9, likelihood: Likelihood = "representative", top_p: float = 0.9):
        super().__init__(k, temperature, likelihood)
        if not 0 < top_p <= 1:
            raise ValueError(f"model.mixture.top_p={top_p} (Nucleus): must be in (0, 1].")
        self.top_p = top_p

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        top_log_probs, support = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1)
        probs = top_log_probs.exp()
        mass_before = probs.cumsum(-1) - probs
        weights = renormalise(probs, keep=mass_before < self.top_p)
        return MixtureStep(support, weights, draw_representative(support, weights))


class ElementwiseMax(MixtureRule):
    """Top-k support; the input is the element-wise maximum of the k embeddings (an option of the
    paper's code). Weights are p_t renormalised on the top k and serve the representative draw
    and the `weighted` likelihood; slots with weight 0 are left out of the maximum."""

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        support, weights = self._top_k(log_probs)
        return MixtureStep(support, weights, draw_representative(support, weights))

    def embed(self, embedding: nn.Module, step: MixtureStep) -> Tensor:
        vectors = embedding(step.support)
        outside = (step.weights <= 0).unsqueeze(-1)
        return vectors.masked_fill(outside, torch.finfo(vectors.dtype).min).max(-2).values

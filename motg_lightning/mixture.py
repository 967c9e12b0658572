"""Mixture rules: how one thinking step turns next-token logits into a mixed input embedding.

A rule is the unified framework of "Learning to Reason with Mixture of Tokens" (Jain & Rappazzo,
arXiv 2509.21482, section "MoT-G"): from the tempered distribution ``p_t = softmax(z_t / τ)`` it
chooses a support ``S_t`` of ``k`` token ids and weights ``w_t`` on the simplex over it; the next
input is ``e_t = Σ_i w_t,i E[S_t,i]`` and a representative token ``r_t ~ Categorical(w_t)`` is
the trajectory's text. Given fresh logits and the recorded step, the rule also returns the
step's log-likelihood for the GRPO loss.

New methods subclass :class:`MixtureRule` and implement :meth:`MixtureRule.choose` (and
:meth:`MixtureRule.embed` or :meth:`MixtureRule.step_log_likelihood` where they differ); the
rollout and the loss only use this interface, and pass the model's input embedding to all three
(rules whose input is not a plain weighted sum, such as Gaussian noise, need it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .densities import dirichlet_log_density, log_gamma_sample

Likelihood = Literal["representative", "weighted", "density", "sum"]


@dataclass
class MixtureStep:
    """What a rule chose at one step, for a batch (leading dims ``...``).

    Attributes:
        support: ``[..., k]`` token ids ``S_t``; entries with weight 0 are outside the support.
        weights: ``[..., k]`` float weights ``w_t`` on the simplex over ``support``.
        token: ``[...]`` representative token ``r_t``, one of ``support``.
        extras: the rule's own random draws, each ``[..., *]``, where its likelihood needs them.
    """

    support: Tensor
    weights: Tensor
    token: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def steps(self, part: slice) -> "MixtureStep":
        """The steps ``part`` of a ``[N, T, ...]`` record."""
        return MixtureStep(
            self.support[:, part], self.weights[:, part], self.token[:, part],
            {name: value[:, part] for name, value in self.extras.items()},
        )


def sample_index(probs: Tensor) -> Tensor:
    """One index per row of ``[..., n]`` probabilities (need not be normalised), by inverse CDF.

    One uniform number per row instead of ``n`` (``torch.multinomial`` draws an exponential per
    entry, which dominates a decode step's sampling over a 50k vocabulary). The CDF is summed in
    float64 so tail tokens keep their probability; zero-probability entries are never chosen.
    """
    cdf = probs.double().cumsum(-1)
    threshold = torch.rand(*probs.shape[:-1], 1, device=probs.device, dtype=cdf.dtype) * cdf[..., -1:]
    return torch.searchsorted(cdf, threshold, right=True).clamp_max(probs.shape[-1] - 1).squeeze(-1)


def gumbel_noise_like(values: Tensor) -> Tensor:
    """Standard Gumbel draws ``−log(−log U)`` shaped like ``values``, ``U`` kept above 0."""
    uniform = torch.rand_like(values).clamp_min(torch.finfo(values.dtype).tiny)
    return -torch.log(-torch.log(uniform))


def kept_log_probs(log_probs: Tensor, support: Tensor, kept: Tensor | None = None, scale: float = 1.0) -> Tensor:
    """``scale × log p`` of the ``support`` slots, ``-inf`` on the slots not ``kept`` (all kept when
    None): a softmax of it is ``p`` (at temperature ``1 / scale``) renormalised on the kept slots."""
    gathered = log_probs.gather(-1, support) * scale
    return gathered if kept is None else gathered.masked_fill(~kept, float("-inf"))


def draw_representative(support: Tensor, weights: Tensor) -> Tensor:
    """``r ~ Categorical(w)`` over the support, looked up in the same support it was drawn from.

    (The paper's public code draws the index from the sampled tokens' weights but looks it up in
    the top-k list; this does not.)
    """
    return support.gather(-1, sample_index(weights).unsqueeze(-1)).squeeze(-1)


def renormalise(probs: Tensor, keep: Tensor | None = None) -> Tensor:
    """``probs`` restricted to ``keep`` (all if None) and rescaled to sum to one."""
    if keep is not None:
        probs = probs * keep
    return probs / probs.sum(-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def weight_entropy(weights: Tensor) -> Tensor:
    """Shannon entropy (nats) of mixture weights, ``0 log 0 = 0``."""
    return -torch.special.xlogy(weights, weights).sum(-1)


class MixtureRule(ABC):
    """Base class of all rules.

    Args:
        k: support size, at least 1 (number of tokens mixed per thinking step); the paper uses 2.
        temperature: τ > 0 of p_t = softmax(z_t / τ), used for sampling and, unlike the paper's
            code, also for the log-likelihood of the loss; the paper's runs use 0.9.
        likelihood: step log-likelihood of a thinking step used by the GRPO loss.
            `representative`: log π(r_t) of the representative token (the paper's Dirichlet runs);
            `weighted`: Σ_i w̃_i log π(S_t,i) with w̃ = π renormalised on the support,
            the gradient flowing through w̃ (the paper's "different tokens" runs).
    """

    LIKELIHOODS: tuple[str, ...] = ("representative", "weighted")
    #: the representative token is a plain draw from the distribution, so an answer step reuses
    #: it instead of drawing again
    REPRESENTATIVE_IS_SAMPLE: bool = False

    def __init__(self, k: int = 2, temperature: float = 0.9, likelihood: Likelihood = "representative"):
        if k < 1:
            raise ValueError(f"model.mixture.k={k}: the support size must be at least 1 (k=1 is discrete decoding).")
        if not temperature > 0:
            raise ValueError(f"model.mixture.temperature={temperature}: must be > 0 (the paper uses 0.9).")
        if likelihood not in self.LIKELIHOODS:
            raise ValueError(f"model.mixture.likelihood={likelihood!r}: choose one of {', '.join(self.LIKELIHOODS)}.")
        self.k = k
        self.temperature = temperature
        self.likelihood = likelihood

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({args})"

    @property
    def support_size(self) -> int:
        """Slots of a step's support (``k`` unless a rule adds its own)."""
        return self.k

    @property
    def detaches_inputs(self) -> bool:
        """Whether the loss feeds thinking steps' rebuilt inputs without gradient into the
        embedding matrix. False here: the recorded draws (tokens, weights) are the data, and an
        input ``Σ w_i E[S_i]`` is a differentiable function of the weights θ given them, so the
        exact score function keeps that path (also for Dirichlet's density). Rules whose sampled
        quantity is the input itself (Gaussian) or whose paper detaches it (SofT-GRPO's Gumbel)
        override this.
        """
        return False

    def log_probs(self, logits: Tensor) -> Tensor:
        """Tempered log-distribution ``log softmax(z / τ)`` in float32."""
        return torch.log_softmax(logits.float() / self.temperature, dim=-1)

    @abstractmethod
    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        """Choose support, weights and representative token from ``[..., V]`` log-probs."""

    def embed(self, embedding: nn.Module, step: MixtureStep) -> Tensor:
        """Input embedding ``Σ_i w_i E[S_i]`` of ``[..., k]`` steps, shape ``[..., D]``."""
        vectors = embedding(step.support)
        return (step.weights.unsqueeze(-1).to(vectors.dtype) * vectors).sum(-2)

    def step_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """Log-likelihood of a recorded thinking step under ``[..., V]`` log-probs."""
        if self.likelihood == "representative":
            return log_probs.gather(-1, step.token.unsqueeze(-1)).squeeze(-1)
        in_support = step.weights > 0
        masked = kept_log_probs(log_probs, step.support, in_support)
        policy_weights = torch.softmax(masked, dim=-1)
        return (policy_weights * masked.masked_fill(~in_support, 0.0)).sum(-1)

    def _top_k(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        top_log_probs, support = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1)
        return support, torch.softmax(top_log_probs, dim=-1)


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
        weights = renormalise(torch.where(kept, weights.clamp_min(torch.finfo(weights.dtype).tiny), 0.0))
        return MixtureStep(support, weights, draw_representative(support, weights))

    def concentration(self, log_probs: Tensor, support: Tensor, kept: Tensor | None = None) -> Tensor:
        """``α q`` with ``q`` the distribution renormalised on the ``kept`` slots of ``support``
        (all when None), floored; slots not kept get the floor and must be masked by the caller."""
        q = torch.softmax(kept_log_probs(log_probs, support, kept), dim=-1)
        return (self.alpha * q).clamp_min(self.min_concentration)

    def step_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        if self.likelihood != "density":
            return super().step_log_likelihood(log_probs, step, embedding)
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

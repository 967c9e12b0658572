"""Mixture rules: how one thinking step turns next-token logits into a mixed input embedding.

A rule is the unified framework of "Learning to Reason with Mixture of Tokens" (Jain & Rappazzo,
arXiv 2509.21482, section "MoT-G"): from the tempered distribution ``p_t = softmax(z_t / τ)`` it
chooses a support ``S_t`` of ``k`` token ids and weights ``w_t`` on the simplex over it; the next
input is ``e_t = Σ_i w_t,i E[S_t,i]`` and a representative token ``r_t ~ Categorical(w_t)`` is
the trajectory's text. Given fresh logits and the recorded step, the rule also returns the
step's log-likelihood for the GRPO loss.

New methods subclass :class:`MixtureRule` and implement :meth:`MixtureRule.choose` (and
:meth:`MixtureRule.embed` where the input differs; a rule whose paper trains with a density lists
``"density"`` in ``LIKELIHOODS`` and implements :meth:`MixtureRule.density_log_likelihood`); the
rollout and the loss only use this interface, and pass the model's input embedding to all three
(rules whose input is not a plain weighted sum, such as Gaussian noise, need it). A trainable rule
is also entered in :mod:`.registry`, which the benchmarks, the README and the tests read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn


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


def positive_on(weights: Tensor, kept: Tensor) -> Tensor:
    """``weights`` held at least at the smallest normal float on the ``kept`` slots (a softmax can
    round a drawn slot to 0), 0 on the others: ``weights > 0`` then marks exactly the slots a
    likelihood scores, which the loss and the filtered scoring read."""
    return torch.where(kept, weights.clamp_min(torch.finfo(weights.dtype).tiny), 0.0)


def next_token_entropy(log_probs: Tensor, probs: Tensor | None = None) -> Tensor:
    """Entropy (nats) of ``[..., V]`` log-probabilities (``probs``: their exponential, if at hand)."""
    return -((log_probs.exp() if probs is None else probs) * log_probs).sum(-1)


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
            A rule adds `density` or `sum` to its `LIKELIHOODS` where its paper trains with one.
    """

    #: the likelihoods a rule accepts; any other is refused at construction
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

    #: with the density likelihood, the mixed inputs are data to the loss (:attr:`detaches_inputs`)
    DENSITY_INPUTS_ARE_DATA: bool = False

    @property
    def detaches_inputs(self) -> bool:
        """Whether the loss feeds thinking steps' rebuilt inputs without gradient into the
        embedding matrix. By default not: the recorded draws (tokens, weights) are the data, and an
        input ``Σ w_i E[S_i]`` is a differentiable function of the weights θ given them, so the
        exact score function keeps that path (also for Dirichlet's density). Rules whose sampled
        quantity is the input itself (Gaussian) or whose paper detaches it (SofT-GRPO's Gumbel,
        Latent-GRPO) set :attr:`DENSITY_INPUTS_ARE_DATA`: their density likelihood detaches them
        (their token likelihoods keep the path).
        """
        return self.DENSITY_INPUTS_ARE_DATA and self.likelihood == "density"

    def build_parameters(self, embedding: nn.Module) -> nn.Module | None:
        """The parameters this rule trains with the policy, as a module built for ``embedding``
        (its width, dtype and device), or None: no rule but HRPO's has any. They are attached to
        the policy's input embedding (:mod:`.parameters`), where :meth:`embed` finds them."""
        return None

    def learning_rate_scale(self, name: str) -> float:
        """The factor of the optimizer's learning rate for the rule's parameter ``name`` (a
        parameter of :meth:`build_parameters`' module, any prefix before it)."""
        return 1.0

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
        """Log-likelihood of a recorded thinking step under ``[..., V]`` log-probs: the method of
        :attr:`likelihood` (one of ``LIKELIHOODS``, checked at construction)."""
        return getattr(self, f"{self.likelihood}_log_likelihood")(log_probs, step, embedding)

    def representative_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``log π(r_t)`` of the representative token."""
        return log_probs.gather(-1, step.token.unsqueeze(-1)).squeeze(-1)

    def weighted_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``Σ_i w̃_i log π(S_t,i)`` over the slots with weight, ``w̃`` = π renormalised on them."""
        in_support = step.weights > 0
        masked = kept_log_probs(log_probs, step.support, in_support)
        policy_weights = torch.softmax(masked, dim=-1)
        return (policy_weights * masked.masked_fill(~in_support, 0.0)).sum(-1)

    def sum_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``Σ_i log π(S_t,i)`` over every slot: the log-probability of the support as independent
        draws (Multiplex's; only right where every slot is a draw)."""
        return log_probs.gather(-1, step.support).sum(-1)

    def density_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """The log-density of the step's own random draws. Only rules listing ``"density"`` in
        ``LIKELIHOODS`` are asked for it (construction refuses the choice otherwise), and each of
        them overrides this (:meth:`__init_subclass__` checks at class creation)."""
        raise TypeError(f"{type(self).__name__} does not list 'density' in LIKELIHOODS: it has no density likelihood.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "density" in cls.LIKELIHOODS and cls.density_log_likelihood is MixtureRule.density_log_likelihood:
            raise TypeError(f"{cls.__name__} lists 'density' in LIKELIHOODS but does not implement density_log_likelihood.")

    def _top_k(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        top_log_probs, support = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1)
        return support, torch.softmax(top_log_probs, dim=-1)

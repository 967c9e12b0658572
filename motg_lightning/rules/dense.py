"""Rules whose input blends the whole next-token distribution rather than a few sampled tokens.

* :class:`Gaussian` -- Soft Tokens, Hard Truths (Butt et al., arXiv 2509.19170): the
  probability-weighted embedding ``p·E`` at a thinking temperature plus Gaussian noise; trained
  with the Gaussian log-density of the noisy input. ``thinking_temperature`` near 0 gives its
  "fuzzy" tokens.
* :class:`MixtureOfInputs` -- Mixture of Inputs (Zhuang et al., arXiv 2505.14827): sample ``y``
  and feed the posterior blend ``(H·p + (β + 1 − H)·onehot(y)) / (β + 1)``.

``p·E`` runs over the ``k`` most probable tokens, renormalised (a recorded step holds ``k`` token
ids, not a vocabulary-sized vector); with ``k`` in the tens the mass left out is negligible at the
temperatures these methods use, and ``k = V`` is exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Likelihood, MixtureRule, MixtureStep, draw_representative, kept_log_probs, sample_index


def embedding_rms(embedding: nn.Module) -> Tensor:
    """Root mean square of the entries of the embedding matrix (a 0-d float32 tensor)."""
    return embedding.weight.detach().float().pow(2).mean().sqrt()


class Gaussian(MixtureRule):
    """Soft Tokens, Hard Truths: e = Σ_i p̃_i E[S_i] + σ ε, ε ~ N(0, I).

    ``S`` are the top ``k`` tokens and ``p̃ = softmax(log p[S] · τ / τ_think)`` their distribution
    at the thinking temperature τ_think (``p`` is the rule's tempered distribution at τ, which the
    answer phase samples from). ``σ = noise_scale × RMS(E)``, measured once per embedding version
    (the paper: σ ≈ 0.33 × RMS, τ_think = 0.5). The text is ``r ~ p̃``.

    The likelihood (``likelihood="density"``) is ``log N(e; μ_θ, σ² I)`` with the current policy's
    mean ``μ_θ = Σ_i p̃_θ,i E[S_i]`` over the recorded support: the density of the input the model
    actually saw. ``e`` is data (rebuilt from the record and detached): the gradient reaches the
    embedding matrix and the logits through ``μ_θ`` alone, the score-function estimator of the
    paper. The inputs of later steps, being samples, carry no gradient either
    (:attr:`Gaussian.detaches_inputs`). ``extras`` keep the scaled noise ``σ ε`` and σ.

    Args:
        likelihood: `density` (the default): log N(e; μ_θ, σ² I) of the input the model saw;
            or `representative` / `weighted`, as for every rule.
        thinking_temperature: τ_think > 0 of the mean; near 0 (e.g. 1e-4) gives "fuzzy" tokens,
            the top token's embedding plus noise.
        noise_scale: σ relative to the embedding RMS, >= 0; 0 feeds the plain p̃·E.
    """

    LIKELIHOODS = ("density", "representative", "weighted")
    #: with the density likelihood the input e is the sample itself, hence data
    DENSITY_INPUTS_ARE_DATA = True

    def __init__(
        self, k: int = 16, temperature: float = 1.0, likelihood: Likelihood = "density",
        thinking_temperature: float = 0.5, noise_scale: float = 0.33,
    ):
        super().__init__(k, temperature, likelihood)
        if not thinking_temperature > 0:
            raise ValueError(f"model.mixture.thinking_temperature={thinking_temperature} (Gaussian): must be > 0 (1e-4 gives fuzzy tokens).")
        if noise_scale < 0:
            raise ValueError(f"model.mixture.noise_scale={noise_scale} (Gaussian): must be >= 0 (the paper uses 0.33).")
        if likelihood == "density" and noise_scale == 0:
            raise ValueError("model.mixture.noise_scale=0 (Gaussian) has no density: set model.mixture.likelihood=representative or a positive noise_scale.")
        self.thinking_temperature = thinking_temperature
        self.noise_scale = noise_scale
        self._rms_key: tuple[int, int] | None = None  # (weight address, version) of the embedding measured
        self._rms: Tensor | None = None

    def _sigma(self, embedding: nn.Module) -> Tensor:
        """``σ = noise_scale × RMS(E)``, the RMS measured once per version of the embedding matrix.

        A compiled decode step cannot compare data pointers: there it reads the last measurement
        (a rollout measures before its first step, :func:`motg_lightning.rollout.step.draw_shapes`,
        so the same σ as eagerly), or measures in the graph when none was made."""
        if torch.compiler.is_compiling():
            return self.noise_scale * (self._rms if self._rms is not None else embedding_rms(embedding))
        weight = embedding.weight
        key = (weight.data_ptr(), weight._version)
        if self._rms is None or self._rms_key != key:
            self._rms_key, self._rms = key, embedding_rms(embedding)
        return self.noise_scale * self._rms

    def _mean_weights(self, log_probs: Tensor, support: Tensor, kept: Tensor | None = None) -> Tensor:
        """``p̃`` on the ``kept`` slots of ``support`` (all when None), 0 elsewhere."""
        return torch.softmax(kept_log_probs(log_probs, support, kept, self.temperature / self.thinking_temperature), dim=-1)

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        support = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1).indices
        weights = self._mean_weights(log_probs, support)  # 0 on slots a top-p / min-p filter removed
        sigma = self._sigma(embedding).to(log_probs.device).expand(log_probs.shape[:-1])
        noise = sigma.unsqueeze(-1) * torch.randn(*log_probs.shape[:-1], embedding.weight.shape[-1], device=log_probs.device)
        return MixtureStep(support, weights, draw_representative(support, weights), {"noise": noise, "sigma": sigma})

    def embed(self, embedding: nn.Module, step: MixtureStep) -> Tensor:
        mean = super().embed(embedding, step)
        return mean + step.extras["noise"].to(mean.dtype)

    def density_log_likelihood(self, log_probs: Tensor, step: MixtureStep, embedding: nn.Module) -> Tensor:
        """``log N(e; μ_θ, σ² I)`` of the input the model saw."""
        # The sampled input e is data: rebuilt from the record and detached, so the gradient reaches
        # the embedding matrix and the logits only through the mean μ_θ (a score-function estimate).
        vectors = embedding(step.support).float()
        sample = ((step.weights.unsqueeze(-1) * vectors).sum(-2) + step.extras["noise"].float()).detach()
        kept = step.weights > 0  # the slots the mean ran over at sampling time
        policy_weights = self._mean_weights(log_probs, step.support, kept)
        mean = (policy_weights.unsqueeze(-1) * vectors).sum(-2)
        sigma = step.extras["sigma"].float()
        sigma = torch.where(sigma > 0, sigma, 1.0)  # steps that did not mix record σ = 0; keep their gradient finite
        dimension = mean.shape[-1]
        squared = (sample - mean).pow(2).sum(-1)
        return -0.5 * squared / sigma**2 - dimension * torch.log(sigma) - 0.5 * dimension * math.log(2 * math.pi)


def normalised_entropy(log_probs: Tensor) -> Tensor:
    """Entropy of ``[..., V]`` log-probs divided by ``log V``, in ``[0, 1]``."""
    entropy = -(log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1)
    return (entropy / math.log(log_probs.shape[-1])).clamp(0.0, 1.0)


class MixtureOfInputs(MixtureRule):
    """Mixture of Inputs: y ~ p, input weights w = (H·p + (β + 1 − H)·onehot(y)) / (β + 1).

    ``H`` is the entropy of ``p`` divided by ``log V`` (so ``β + 1 − H ≥ β``): an uncertain step
    leans on the distribution, a confident one on the sampled token; larger β keeps more of the
    sample (the paper recommends β in 0.5–2). The support has ``k + 1`` slots: ``y`` first, then
    the top ``k`` tokens carrying ``p`` (renormalised). The text and the likelihood are those of
    ordinary sampling, ``log π(y)``; as β grows the input tends to ``E[y]``, discrete sampling.

    Args:
        likelihood: `representative` only: log π(y) of the sampled token, as ordinary sampling.
        beta: β >= 0 of the posterior blend (the paper recommends 0.5 to 2).
    """

    LIKELIHOODS = ("representative",)
    REPRESENTATIVE_IS_SAMPLE = True

    def __init__(self, k: int = 16, temperature: float = 1.0, likelihood: Likelihood = "representative", beta: float = 1.0):
        super().__init__(k, temperature, likelihood)
        if not beta >= 0:
            raise ValueError(f"model.mixture.beta={beta} (MixtureOfInputs): must be >= 0 (the paper recommends 0.5 to 2).")
        self.beta = beta

    @property
    def support_size(self) -> int:
        return self.k + 1

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        sampled = sample_index(log_probs.exp())
        top_log_probs, top = log_probs.topk(min(self.k, log_probs.shape[-1]), dim=-1)
        entropy = normalised_entropy(log_probs).unsqueeze(-1)
        prior = entropy * torch.softmax(top_log_probs, dim=-1)
        observed = self.beta + 1 - entropy
        weights = torch.cat([observed, prior], dim=-1) / (self.beta + 1)
        return MixtureStep(torch.cat([sampled.unsqueeze(-1), top], dim=-1), weights, sampled)

"""HRPO's hybrid rule (Yue et al., "Hybrid Latent Reasoning via Reinforcement Learning", arXiv
2505.18454): while thinking, the next input blends the sampled token's embedding with the
previous step's hidden state projected into the embedding space, through a gate whose parameters
train with the policy.

The projection is the one HRPO's public code feeds: the hidden state through the LM head and the
sampling softmax, back through the embedding matrix, ``ĥ = Eᵀ p / ‖p‖₂`` (``p`` the distribution
the token was drawn from, over its ``k`` most probable tokens as Hugging Face's default top-k of
50 leaves it there). The rule reads it from the step's logits, as every rule does, so the rollout
and the loss need no hidden-state hook; ``ĥ`` is rebuilt from the recorded support and weights
and is data to the loss (HRPO stores it from generation, without gradient). The gate's
parameters live on the policy's input embedding (:mod:`.parameters`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Likelihood, MixtureRule, MixtureStep, draw_representative
from .parameters import rule_parameters

#: inside HRPO's square root, so that its gradient stays finite where the gate is fully open
GATE_EPSILON = 1e-8


class HybridGate(nn.Module):
    """HRPO's gate, after Griffin's RG-LRU: for the token embedding ``e`` and the projected hidden
    state ``ĥ``, ``r = σ(W_r e + b_r)``, ``i = σ(W_i e + b_i)``, ``a = exp(−c · softplus(−Λ) · r)``
    and the input is ``a ⊙ e + √(1 − a² + 1e-8) ⊙ (i ⊙ ĥ)``, elementwise over the width ``D``.

    ``W`` start as ``N(0, 0.02²)`` and ``b`` at 0 (Hugging Face's initialisation of HRPO's linear
    layers), and ``Λ`` so that ``a = u^r`` with ``u ~ U[gate_min, gate_max]`` per dimension:
    close to 1, the input starts close to ``e`` (``r ≈ 0.5``).
    """

    def __init__(self, width: int, c: float, gate_min: float, gate_max: float, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.c, self.gate_min, self.gate_max = c, gate_min, gate_max
        placed = dict(dtype=dtype, device=device)
        self.recurrence_weight = nn.Parameter(torch.empty(width, width, **placed))
        self.recurrence_bias = nn.Parameter(torch.empty(width, **placed))
        self.input_weight = nn.Parameter(torch.empty(width, width, **placed))
        self.input_bias = nn.Parameter(torch.empty(width, **placed))
        self.decay = nn.Parameter(torch.empty(width, **placed))  # Λ
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for weight, bias in ((self.recurrence_weight, self.recurrence_bias), (self.input_weight, self.input_bias)):
            nn.init.normal_(weight, std=0.02)
            nn.init.zeros_(bias)
        # u = 1 would need Λ = +inf: it is held just below (a within 1e-7 of 1)
        u = torch.empty_like(self.decay, dtype=torch.float64).uniform_(self.gate_min, self.gate_max).clamp_max(1 - 1e-7)
        self.decay.copy_(-torch.log(u ** (-1.0 / self.c) - 1.0))

    def forward(self, token_embedding: Tensor, hidden: Tensor) -> Tensor:
        """The blended input, in ``token_embedding``'s dtype; ``a`` and the blend are computed in
        float32 (in bfloat16, ``a`` of 0.995 to 0.9995 rounds to 0.9961 or 1)."""
        recurrence = torch.sigmoid(F.linear(token_embedding, self.recurrence_weight, self.recurrence_bias).float())
        input_gate = torch.sigmoid(F.linear(token_embedding, self.input_weight, self.input_bias).float())
        a = torch.exp(-self.c * F.softplus(-self.decay.float()) * recurrence)
        blended = a * token_embedding.float() + torch.sqrt(1 - a.pow(2) + GATE_EPSILON) * (input_gate * hidden.float())
        return blended.to(token_embedding.dtype)


class HRPO(MixtureRule):
    """HRPO: a token x drawn from the top k (p renormalised there, p̃) and the input gate(E[x], ĥ)
    (:class:`HybridGate`) with ``ĥ = Σ_i p̃_i E[S_i] / ‖p̃‖₂``; the text is ``x``.

    The likelihood is the sampled token's, ``log π(x)`` (``representative``), as HRPO trains: the
    gate learns through the later steps' likelihoods, which its inputs condition. A recorded step
    keeps ``S``, ``p̃`` and ``x``; ``extras["hybrid"]`` marks the steps fed through the gate
    (answer, forced and padding steps are plain token embeddings).

    Args:
        k: most probable tokens `x` is drawn from and `ĥ` runs over (HRPO's generation: 50).
        temperature: τ of p (HRPO's runs: 0.5).
        likelihood: `representative` only: log π(x).
        c: the gate's scale c > 0 (RG-LRU's and HRPO's 8).
        gate_min: the low end, in (0, 1], of the `u` that `Λ` starts from (HRPO: 0.99).
        gate_max: their high end, in [gate_min, 1] (HRPO: 0.999); 1 nearly closes the gate (a
            within 1e-7 of 1: the input is `E[x]` plus at most 4e-4 `ĥ`).
        gate_lr_scale: learning rate of `W` and `b` over the policy's (HRPO: 1e-4 against
            5e-6, 20).
        decay_lr_scale: learning rate of `Λ` over the policy's (HRPO: 1e-3 against 5e-6, 200).
    """

    LIKELIHOODS = ("representative",)

    def __init__(
        self, k: int = 50, temperature: float = 0.5, likelihood: Likelihood = "representative", c: float = 8.0,
        gate_min: float = 0.99, gate_max: float = 0.999, gate_lr_scale: float = 20.0, decay_lr_scale: float = 200.0,
    ):
        super().__init__(k, temperature, likelihood)
        if not c > 0:
            raise ValueError(f"model.mixture.c={c} (HRPO): the gate's scale must be > 0 (HRPO uses 8).")
        if not 0 < gate_min <= gate_max <= 1:
            raise ValueError(f"model.mixture.gate_min={gate_min}, gate_max={gate_max} (HRPO): need 0 < gate_min <= gate_max "
                             "<= 1 (HRPO uses 0.99 and 0.999).")
        if not (gate_lr_scale > 0 and decay_lr_scale > 0):
            raise ValueError(f"model.mixture.gate_lr_scale={gate_lr_scale}, decay_lr_scale={decay_lr_scale} (HRPO): "
                             "both must be > 0.")
        self.c, self.gate_min, self.gate_max = c, gate_min, gate_max
        self.gate_lr_scale, self.decay_lr_scale = gate_lr_scale, decay_lr_scale

    def build_parameters(self, embedding: nn.Module) -> nn.Module:
        weight = embedding.weight
        return HybridGate(weight.shape[-1], self.c, self.gate_min, self.gate_max, weight.dtype, weight.device)

    def learning_rate_scale(self, name: str) -> float:
        return self.decay_lr_scale if name.endswith("decay") else self.gate_lr_scale

    def choose(self, log_probs: Tensor, embedding: nn.Module) -> MixtureStep:
        support, weights = self._top_k(log_probs)
        token = draw_representative(support, weights)
        return MixtureStep(support, weights, token, {"hybrid": torch.ones_like(token, dtype=torch.bool)})

    def embed(self, embedding: nn.Module, step: MixtureStep) -> Tensor:
        token_embedding = embedding(step.token)
        vectors = embedding(step.support).detach()  # ĥ is data, as HRPO's stored hidden states
        weights = step.weights.to(vectors.dtype)
        projected = (weights.unsqueeze(-1) * vectors).sum(-2) / weights.norm(dim=-1, keepdim=True).clamp_min(math.ulp(1.0))
        hybrid = rule_parameters(embedding, self)(token_embedding, projected)
        return torch.where(step.extras["hybrid"].unsqueeze(-1), hybrid, token_embedding)

"""Step log-likelihoods of recorded trajectories under a (possibly updated) policy.

The forward pass feeds the recorded input embeddings (prompt, then each step's mixture) as
``inputs_embeds``, so the model sees exactly what it saw while generating (METHOD.md §3). Thinking
steps are scored by the rule's likelihood, ordinary steps by their token's log-probability.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from .mixture import MixtureRule
from .rollout import Rollout


def trajectory_log_likelihood(model: PreTrainedModel, rule: MixtureRule, rollout: Rollout) -> Tensor:
    """``[N, T]`` log-likelihood of every recorded step under ``model`` (differentiable)."""
    steps = rollout.tokens.shape[1]
    output = model(
        inputs_embeds=rollout.input_embeddings(model.get_input_embeddings(), rule),
        attention_mask=rollout.attention_mask()[:, :-1],
        position_ids=rollout.position_ids()[:, :-1],
        use_cache=False,
        logits_to_keep=steps,
    )
    log_probs = rule.log_probs(output.logits)
    mixed = rule.step_log_likelihood(log_probs, rollout.step())
    token = log_probs.gather(-1, rollout.tokens.unsqueeze(-1)).squeeze(-1)
    return torch.where(rollout.thinking, mixed, token)

"""Step log-likelihoods of recorded trajectories under a (possibly updated) policy.

The forward pass feeds the recorded input embeddings (prompt, then each step's mixture) as
``inputs_embeds``, so the model sees exactly what it saw while generating (docs/method.md §4). Thinking
steps are scored by the rule's likelihood, ordinary steps by their token's log-probability.

With ``chunk_size`` the vocabulary projection runs over a few steps at a time under activation
checkpointing, so no float32 ``N × T × V`` tensor is ever held: only one ``N × chunk × V`` slice,
recomputed in the backward pass. This needs a model whose logits are
``get_output_embeddings()(get_decoder()(...).last_hidden_state)`` (Llama, Qwen2, Mistral, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from ..rules.base import MixtureRule, MixtureStep, next_token_entropy
from ..rules.filters import SamplingFilter, recorded_ids
from ..rollout.record import Rollout, recorded_log_likelihood


def score_steps(
    rule: MixtureRule, logits: Tensor, step: MixtureStep, thinking: Tensor, embedding: nn.Module, with_entropy: bool = False,
    scoring: SamplingFilter | None = None,
) -> Tensor:
    """``[n, t]`` log-likelihood of recorded steps given their ``[n, t, V]`` logits; with
    ``with_entropy``, ``[n, t, 2]``: it and the entropy of the tempered next-token distribution.
    ``scoring``: score under the distribution these filters leave, the recorded ids kept
    (``model.grpo.loss_distribution: filtered``); None: the whole tempered distribution."""
    log_probs = rule.log_probs(logits)
    scored = log_probs if scoring is None else scoring.apply(log_probs, recorded_ids(step))
    scores = recorded_log_likelihood(rule, scored, step, thinking, embedding)
    if not with_entropy:
        return scores
    return torch.stack([scores, next_token_entropy(log_probs)], dim=-1)


def _score_chunk(
    rule: MixtureRule, head: nn.Module, hidden: Tensor, step: MixtureStep, thinking: Tensor, embedding: nn.Module,
    with_entropy: bool, scoring: SamplingFilter | None,
) -> Tensor:
    return score_steps(rule, head(hidden), step, thinking, embedding, with_entropy, scoring)


#: the name under which a sharded (FSDP2) model carries :func:`trajectory_log_likelihood` as a
#: registered forward method, so that its parameters are gathered around the whole computation
SHARDED_METHOD = "motg_trajectory_log_likelihood"


def trajectory_log_likelihood(
    model: PreTrainedModel, rule: MixtureRule, rollout: Rollout, chunk_size: int | None = None, with_entropy: bool = False,
    scoring: SamplingFilter | None = None,
) -> Tensor:
    """``[N, T]`` log-likelihood of every recorded step under ``model`` (differentiable).

    Args:
        chunk_size: steps per vocabulary projection; None projects all steps at once.
        with_entropy: return ``[N, T, 2]``: the log-likelihood and the entropy of each step's
            tempered next-token distribution (for an entropy bonus), both differentiable.
        scoring: the filters the steps are scored under (:func:`score_steps`); None: none.
    """
    sharded = getattr(model, SHARDED_METHOD, None)
    if sharded is not None:
        return sharded(rule, rollout, chunk_size, with_entropy, scoring)
    return log_likelihood_of_steps(model, rule, rollout, chunk_size, with_entropy, scoring)


def log_likelihood_of_steps(
    model: PreTrainedModel, rule: MixtureRule, rollout: Rollout, chunk_size: int | None, with_entropy: bool = False,
    scoring: SamplingFilter | None = None,
) -> Tensor:
    """:func:`trajectory_log_likelihood` itself, run where the model's parameters are whole."""
    steps = rollout.tokens.shape[1]
    embedding = model.get_input_embeddings()
    inputs = rollout.model_inputs(embedding, rule)
    record = rollout.step()
    if chunk_size is None:
        logits = model(**inputs, logits_to_keep=steps).logits
        return score_steps(rule, logits, record, rollout.thinking, embedding, with_entropy, scoring)

    hidden = model.get_decoder()(**inputs).last_hidden_state[:, -steps:]
    head = model.get_output_embeddings()
    parts = []
    for start in range(0, steps, chunk_size):
        part = slice(start, start + chunk_size)
        arguments = (rule, head, hidden[:, part], record.steps(part), rollout.thinking[:, part], embedding, with_entropy, scoring)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_score_chunk, *arguments, use_reentrant=False))
        else:
            parts.append(_score_chunk(*arguments))
    return torch.cat(parts, dim=1)

"""Exploration measures of rollouts: the paper's explanation of why mixtures help.

Jain & Rappazzo (arXiv 2509.21482) attribute MoT-G's gains to more exploration while thinking,
measured by entropies. This module measures it three ways (defined in ``docs/exploration.md``):

* **along the reasoning**: the mean next-token entropy and mixture-weight entropy of thinking
  steps, in equal buckets of the step index (:func:`profile_by_step`);
* **in token space**: per group, the fraction of distinct representative tokens among all its
  thinking tokens, and the mean pairwise Jaccard overlap of the members' token sets
  (:func:`token_exploration`);
* **in hidden-state space**: the matrix entropy of a trajectory's hidden states per layer
  (:func:`matrix_entropy`): the Shannon entropy of the eigenvalues of the trace-normalised Gram
  matrix of the (row-normalised) hidden states of its thinking steps, divided by ``log T`` so that
  1 means the steps spread evenly over ``T`` directions and 0 that they all point the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..rules.base import MixtureRule
from ..rollout.record import Rollout


def profile_by_step(values: Tensor, mask: Tensor, buckets: int) -> Tensor:
    """``[buckets]`` means of ``values [N, T]`` where ``mask`` holds, in equal step-index buckets
    (NaN where a bucket has no such step)."""
    steps = values.shape[1]
    edges = torch.linspace(0, steps, buckets + 1).round().long().tolist()
    means = []
    for start, end in zip(edges[:-1], edges[1:]):
        part, kept = values[:, start:end], mask[:, start:end]
        count = kept.sum()
        means.append((part * kept).sum() / count if count > 0 else torch.tensor(float("nan")))
    return torch.stack([m.float().cpu() for m in means])


def token_exploration(tokens: Tensor, mask: Tensor, group_size: int) -> dict[str, float]:
    """``distinct_tokens``: mean over groups of (distinct tokens) / (tokens) of its thinking steps;
    ``group_overlap``: mean pairwise Jaccard similarity of the members' token sets."""
    distinct, overlaps = [], []
    rows = [set(row[keep].tolist()) for row, keep in zip(tokens.cpu(), mask.cpu())]
    lengths = mask.sum(-1).tolist()
    for start in range(0, len(rows), group_size):
        members, total = rows[start : start + group_size], sum(lengths[start : start + group_size])
        if total:
            distinct.append(len(set().union(*members)) / total)
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                union = members[i] | members[j]
                if union:
                    overlaps.append(len(members[i] & members[j]) / len(union))
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    return {"distinct_tokens": mean(distinct), "group_overlap": mean(overlaps)}


def matrix_entropy(hidden: Tensor) -> Tensor:
    """Normalised matrix entropy in ``[0, 1]`` of ``[T, D]`` hidden states (``T ≥ 2``)."""
    rows = torch.nn.functional.normalize(hidden.double(), dim=-1)
    gram = rows @ rows.T
    eigenvalues = torch.linalg.eigvalsh(gram / gram.trace()).clamp_min(0)
    entropy = -torch.special.xlogy(eigenvalues, eigenvalues).sum()
    return (entropy / math.log(hidden.shape[0])).float()


@torch.no_grad()
def hidden_state_entropy(model: PreTrainedModel, rule: MixtureRule, rollout: Rollout, max_rows: int = 8) -> Tensor:
    """``[layers + 1]`` mean matrix entropy of the thinking steps' hidden states of up to
    ``max_rows`` trajectories (embedding output first), from one forward over the recorded inputs;
    empty when no trajectory has two thinking steps. The forward runs in any case, so that
    processes whose forwards are collectives (sharded models) stay matched."""
    rows = torch.nonzero(rollout.thinking.sum(-1) >= 2).flatten()[:max_rows].tolist()  # one host sync, not one per row
    part = rollout.select(torch.tensor(rows or [0], device=rollout.tokens.device))
    steps = part.tokens.shape[1]
    output = model(**part.model_inputs(model.get_input_embeddings(), rule), output_hidden_states=True)
    if not rows:
        return torch.empty(0)
    # the hidden state at position P - 1 + t produced step t's logits
    per_layer = []
    for layer in output.hidden_states:
        states = layer[:, -steps:]
        per_layer.append(torch.stack([matrix_entropy(states[i][part.thinking[i]]) for i in range(len(rows))]).mean())
    return torch.stack(per_layer).cpu()


def exploration_metrics(model: PreTrainedModel, rule: MixtureRule, rollout: Rollout, buckets: int = 8) -> dict[str, float]:
    """The entropy profiles along the reasoning and the hidden-state entropy per layer, named as
    logged (``explore/...``); buckets without thinking steps are left out."""
    thinking = rollout.thinking & rollout.completion_mask
    values = {}
    for name, series in (("entropy", rollout.entropy), ("weight_entropy", rollout.weight_entropy)):
        for bucket, value in enumerate(profile_by_step(series, thinking, buckets).tolist()):
            if not math.isnan(value):
                values[f"explore/{name}_by_step/{bucket}"] = value
    layers = hidden_state_entropy(model, rule, rollout)
    for layer, value in enumerate(layers.tolist()):
        values[f"explore/hidden_entropy/layer_{layer:02d}"] = value
    if len(layers):
        values["explore/hidden_entropy/mean"] = float(layers.mean())
    return values

"""One decode step of a rollout as one function of tensors (:func:`decode_step`), which the
:class:`.decoder.Decoder` compiles whole (MoT-G rollout, Jain & Rappazzo, arXiv 2509.21482).

A step is, in order:

* :func:`choose`: the rule's mixture and a plain draw from the tempered (filtered) distribution,
  and the step's log-likelihood under that distribution;
  each row's :class:`.phase.Phase` picks what it feeds: the mixture while thinking, a token in the
  answer, the next forced id while forcing (budget forcing, cold stop), ``pad_id`` once finished;
* :meth:`.record.StepRecord.write`: record the step at index ``t`` (a Python int when eager, a
  0-d tensor when compiled, so that one graph serves every step);
* :meth:`.phase.Phase.update`: ``</think>``, stop strings, EOS and forcing move each row on;
* :func:`.decoder.decode_forward`: the next logits after feeding the chosen inputs.

Nothing in it asks the host for a value or branches on one, and its shapes never change, so
``torch.compile(decode_step, fullgraph=True, dynamic=False)`` captures the whole step, the rule's
random draws included, in one graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..rules.base import MixtureRule, MixtureStep, next_token_entropy, sample_index
from ..rules.filters import SamplingFilter, recorded_ids
from .decoder import decode_forward
from .phase import Phase
from .record import Step, StepRecord, recorded_log_likelihood
from .settings import RolloutSettings


def draw(rule: MixtureRule, log_probs: Tensor, probs: Tensor, removed: Tensor | None, embedding: nn.Module) -> tuple[MixtureStep, Tensor]:
    """The rule's mixture and a plain token ``[N]``, both from the distribution without the
    ``removed`` tokens (:class:`~motg_lightning.rules.filters.SamplingFilter`; None: the whole
    ``log_probs``, whose ``probs`` are given). The rule draws first; a rule whose representative
    is a plain draw gives it for both."""
    filtered = SamplingFilter.restrict(log_probs, removed)
    mixed = rule.choose(filtered, embedding)
    if rule.REPRESENTATIVE_IS_SAMPLE:
        return mixed, mixed.token
    # unfiltered, the sampling distribution is ``probs``: no second exp over the vocabulary
    return mixed, sample_index(probs if removed is None else filtered.exp())


def choose(
    rule: MixtureRule, logits: Tensor, phase: Phase, settings: RolloutSettings, embedding: nn.Module
) -> tuple[Phase, Step]:
    """This step of every row from its ``[N, V]`` logits, and the phase it was taken in (forcing
    starts before the step where thinking must stop)."""
    log_probs = rule.log_probs(logits)  # [N, V] tempered, unfiltered
    probs = log_probs.exp()
    removed = settings.sampling_filter.removed(log_probs)
    mixed, sampled = draw(rule, log_probs, probs, removed, embedding)
    phase = phase.begin_forcing(mixed.token)
    chosen, mixing = phase.next_input(mixed, sampled), phase.mixing
    # the likelihood under the distribution the step was drawn from (a forced token kept in it)
    sampling = SamplingFilter.restrict(log_probs, removed, recorded_ids(chosen))
    log_likelihood = recorded_log_likelihood(rule, sampling, chosen, mixing, embedding)
    entropy = next_token_entropy(log_probs, probs)
    return phase, Step(chosen, mixing, phase.forcing, ~phase.finished, log_likelihood, entropy)


def draw_shapes(rule: MixtureRule, embedding: nn.Module, rows: int, vocabulary: int) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """``{name: (shape after the row dim, dtype)}`` of the rule's extra draws
    (:attr:`MixtureStep.extras`), so that their record exists before the first (compiled) step.

    Found by running :meth:`MixtureRule.choose` on the meta device: shapes and dtypes only, no
    data and no random numbers drawn, so the rollout's draws are those of a run without it."""
    mixed = rule.choose(torch.zeros(rows, vocabulary, device="meta"), embedding)
    return {name: (value.shape[1:], value.dtype) for name, value in mixed.extras.items()}


def decode_step(
    model: PreTrainedModel, rule: MixtureRule, settings: RolloutSettings, logits: Tensor, phase: Phase,
    record: StepRecord, t: int | Tensor, model_inputs: dict[str, Any], forward: bool = True,
) -> tuple[Tensor, Phase, int | Tensor]:
    """Step ``t`` of every row from its ``[N, V]`` logits: ``(next logits, next phase, t + 1)``.

    Records the step in ``record`` in place (at index ``t``, an int or a 0-d tensor). With
    ``forward`` the model is fed the chosen inputs (``model_inputs``:
    :meth:`.decoder.Decoder.step_inputs`); without it (an eager rollout's last step) ``logits`` come
    back unchanged."""
    embedding = model.get_input_embeddings()
    phase, step = choose(rule, logits, phase, settings, embedding)
    record.write(t, step)
    phase = phase.update(step.chosen.token, step.entropy)
    if forward:
        logits = decode_forward(model, rule, step.chosen, t=t, **model_inputs)
    return logits, phase, t + 1

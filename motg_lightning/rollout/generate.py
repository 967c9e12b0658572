"""Batched mixture-of-token generation over input embeddings with a KV cache (MoT-G rollout, Jain &
Rappazzo, arXiv 2509.21482).

All prompts × group members decode together. After the prefill, a decode step is four named calls:

* :func:`choose`: the rule's mixture and a plain draw from the tempered (filtered) distribution;
  each row's :class:`.phase.Phase` picks what it feeds: the mixture while thinking, a token in the
  answer, the next forced id while forcing (budget forcing, cold stop), ``pad_id`` once finished;
* :meth:`.record.StepRecord.write`: record the step (support, weights, representative token,
  phase, forced flag), so the loss can rebuild exactly the inputs the model saw
  (:meth:`.record.Rollout.model_inputs`);
* :meth:`.phase.Phase.update`: ``</think>``, stop strings, EOS and forcing move each row on;
* :meth:`.decoder.Decoder.step`: the next logits.

Each is a function of tensors: phase switches, stops and forcing are decided on the device from
token ids, and the host is asked whether every sequence has finished only every ``sync_every``
steps. (Only :meth:`.decoder.Decoder.step`'s forward is compiled so far.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..collectives import finished_everywhere
from ..rules.base import MixtureRule, MixtureStep, sample_index
from ..rules.filters import filter_log_probs
from .decoder import Decoder
from .phase import Phase
from .record import Rollout, Step, StepRecord, eval_mode, recorded_log_likelihood
from .settings import RolloutSettings


def draw(
    rule: MixtureRule, log_probs: Tensor, probs: Tensor, settings: RolloutSettings, embedding: nn.Module
) -> tuple[MixtureStep, Tensor]:
    """The rule's mixture and a plain token ``[N]``, both from the filtered distribution (the rule
    draws first; a rule whose representative is a plain draw gives it for both)."""
    filtered = filter_log_probs(log_probs, settings.top_p, settings.min_p)
    mixed = rule.choose(filtered, embedding)
    if rule.REPRESENTATIVE_IS_SAMPLE:
        return mixed, mixed.token
    # unfiltered, the sampling distribution is ``probs``: no second exp over the vocabulary
    return mixed, sample_index(probs if filtered is log_probs else filtered.exp())


def choose(
    rule: MixtureRule, logits: Tensor, phase: Phase, settings: RolloutSettings, embedding: nn.Module
) -> tuple[Phase, Step]:
    """This step of every row from its ``[N, V]`` logits, and the phase it was taken in (forcing
    starts before the step where thinking must stop)."""
    log_probs = rule.log_probs(logits)  # [N, V] tempered, unfiltered: what the loss scores
    probs = log_probs.exp()
    mixed, sampled = draw(rule, log_probs, probs, settings, embedding)
    phase = phase.begin_forcing(mixed.token)
    chosen, mixing = phase.next_input(mixed, sampled), phase.mixing
    log_likelihood = recorded_log_likelihood(rule, log_probs, chosen, mixing, embedding)
    entropy = -(probs * log_probs).sum(-1)
    return phase, Step(chosen, mixing, phase.forcing, ~phase.finished, log_likelihood, entropy)


def all_finished(finished: Tensor, synced: bool) -> bool:
    """Whether every row has stopped, on every process when ``synced``: the loop's one host sync."""
    return finished_everywhere(finished) if synced else bool(finished.all())


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    rule: MixtureRule,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    settings: RolloutSettings,
    decoder: Decoder | None = None,
    synced: bool = False,
) -> Rollout:
    """Roll out every row of ``prompt_ids`` (already repeated per group member) with ``rule``.

    ``decoder`` runs the model (default: a fresh one from ``settings``); pass the same one to
    every call when the decode step is compiled. ``synced``: every process of the default
    process group calls this together and all stop at the same step (needed when parameters are
    sharded, so that every forward is matched on every rank)."""
    rows, steps, device = prompt_ids.shape[0], settings.max_new_tokens, prompt_ids.device
    decoder = decoder if decoder is not None else settings.decoder()
    embedding = model.get_input_embeddings()
    phase = Phase.start(settings, rows, device)
    record = StepRecord.empty(rows, steps, rule.support_size, settings.pad_id, device)
    used = 0
    with eval_mode(model):
        logits = decoder.prefill(model, prompt_ids, prompt_mask, steps)
        for t in range(steps):
            phase, step = choose(rule, logits, phase, settings, embedding)
            record.write(t, step)
            phase = phase.update(step.chosen.token, step.entropy)
            used = t + 1
            if used % settings.sync_every == 0 and all_finished(phase.finished, synced):
                break
            if used < steps:
                logits = decoder.step(model, rule, step.chosen, t)
        decoder.release()
    return record.to_rollout(used, prompt_ids, prompt_mask, truncated=~phase.finished)

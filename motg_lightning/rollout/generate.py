"""Batched mixture-of-token generation over input embeddings with a KV cache (MoT-G rollout, Jain &
Rappazzo, arXiv 2509.21482).

All prompts × group members decode together. After the prefill, every decode step is one call of
:func:`.step.decode_step` (the rule's choice, the record's writes, the phase update, the next
logits), a function of tensors: phase switches, stops and forcing are decided on the device from
token ids, and the host is asked whether every sequence has finished only every ``sync_every``
steps. With ``compile_decode`` the :class:`.decoder.Decoder` compiles that whole step once (one
graph per rule, reused by every later step and rollout); the step index is then a 0-d tensor the
step returns incremented, and the step always runs the model's forward, also after the last step
(one forward per rollout whose logits are not used, so that one graph serves every step).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..collectives import finished_everywhere
from ..rules.base import MixtureRule
from .decoder import Decoder
from .phase import Phase
from .record import Rollout, StepRecord, eval_mode
from .settings import RolloutSettings
from .step import decode_step, draw_shapes


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
    run = decoder.step_function(decode_step)
    t: int | Tensor = torch.zeros((), dtype=torch.long, device=device) if decoder.compiled else 0
    used = 0
    with eval_mode(model):
        logits = decoder.prefill(model, prompt_ids, prompt_mask, steps)
        extras = draw_shapes(rule, embedding, rows, logits.shape[-1])
        shape = (rows, steps, rule.support_size, settings.pad_id, device, extras)
        if decoder.compiled:  # the compiled step writes into the same buffers every rollout
            record = decoder.kept_record = StepRecord.kept(decoder.kept_record, *shape)
        else:
            record = StepRecord.empty(*shape)
        while used < steps:
            if decoder.compiled and logits.is_cuda:
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are no longer read
            forward = decoder.compiled or used + 1 < steps  # (one graph: a compiled step always runs it)
            logits, phase, t = run(model, rule, settings, logits, phase, record, t, decoder.step_inputs(used), forward)
            used += 1
            if used % settings.sync_every == 0 and all_finished(phase.finished, synced):
                break
        decoder.release()
    return record.to_rollout(used, prompt_ids, prompt_mask, truncated=~phase.finished, copy=decoder.compiled)

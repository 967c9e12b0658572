"""Batched mixture-of-token generation over input embeddings with a KV cache (MoT-G rollout).

All prompts × group members decode together. While a sequence is *thinking* (from the prompt,
which normally ends with ``<think>``, until its representative tokens end with ``</think>``) its
next input is the mixture chosen by the rule; afterwards it samples ordinary tokens. Phase
switches, stops and budget forcing are decided on the device from token ids; the host is asked
whether every sequence has finished only every ``sync_every`` steps.

Every step is recorded (support, weights, representative token, phase, forced flag), so the loss
can rebuild exactly the input embeddings the model saw (:meth:`.record.Rollout.input_embeddings`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..collectives import finished_everywhere
from ..rules.base import MixtureRule, MixtureStep, sample_index, weight_entropy
from ..rules.filters import filter_log_probs
from .decoder import Decoder
from .record import Rollout, eval_mode
from .settings import RolloutSettings


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
    device = prompt_ids.device
    n = prompt_ids.shape[0]
    steps, k = settings.max_new_tokens, rule.support_size
    think_end, stop = settings.think_end.to(device), settings.stop.to(device)
    eos_ids, forced_ids = settings.eos_ids.to(device), settings.forced_ids.to(device)
    budget = settings.thinking_budget if settings.thinking_budget is not None else steps + 1
    force_on_eos = settings.force_answer_on_eos
    cold_entropy = settings.cold_stop_entropy if settings.cold_stop_entropy is not None else -1.0
    if forced_ids.numel() == 0:  # nothing to force: never start
        forced_ids, budget, force_on_eos = torch.tensor([settings.pad_id], device=device), steps + 1, False
        cold_entropy = -1.0

    decoder = decoder if decoder is not None else settings.decoder()
    embedding = model.get_input_embeddings()

    record = {
        "tokens": torch.full((n, steps), settings.pad_id, dtype=torch.long, device=device),
        "support": torch.full((n, steps, k), settings.pad_id, dtype=torch.long, device=device),
        "weights": torch.zeros(n, steps, k, device=device),
        "thinking": torch.zeros(n, steps, dtype=torch.bool, device=device),
        "forced": torch.zeros(n, steps, dtype=torch.bool, device=device),
        "completion_mask": torch.zeros(n, steps, dtype=torch.bool, device=device),
        "log_likelihood": torch.zeros(n, steps, device=device),
        "entropy": torch.zeros(n, steps, device=device),
        "weight_entropy": torch.zeros(n, steps, device=device),
    }
    recorded_extras: dict[str, Tensor] = {}
    first_slot = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long, device=device), k).float()

    thinking = torch.ones(n, dtype=torch.bool, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    think_steps = torch.zeros(n, dtype=torch.long, device=device)
    cold_run = torch.zeros(n, dtype=torch.long, device=device)  # consecutive low-entropy thinking steps
    force_at = torch.full((n,), -1, dtype=torch.long, device=device)  # index into forced_ids, -1 = off
    think_state, stop_state = think_end.initial_state(n), stop.initial_state(n)  # marker automata (stops.py)

    with eval_mode(model):
        logits = decoder.prefill(model, prompt_ids, prompt_mask, steps)
        used = steps
        for t in range(steps):
            log_probs = rule.log_probs(logits)
            probs = log_probs.exp()
            sampling_log_probs = filter_log_probs(log_probs, settings.top_p, settings.min_p)
            mixed = rule.choose(sampling_log_probs, embedding)
            if rule.REPRESENTATIVE_IS_SAMPLE:
                sampled = mixed.token
            else:  # unfiltered, the sampling distribution is ``probs``: no second exp over the vocabulary
                sampled = sample_index(probs if sampling_log_probs is log_probs else sampling_log_probs.exp())

            may_force = thinking & (force_at < 0)
            ends_early = may_force & torch.isin(mixed.token, eos_ids) if force_on_eos else False
            stop_now = (think_steps >= budget) | (cold_run >= settings.cold_stop_steps) | ends_early
            force_at = torch.where(may_force & stop_now, 0, force_at)
            forcing = force_at >= 0
            use_mixture = thinking & ~forcing
            token = torch.where(forcing, forced_ids[force_at.clamp_min(0)], torch.where(thinking, mixed.token, sampled))
            token = torch.where(finished, settings.pad_id, token)
            support = torch.where(use_mixture[:, None], mixed.support, token[:, None].expand(n, k))
            weights = torch.where(use_mixture[:, None], mixed.weights, first_slot)
            token_log_likelihood = log_probs.gather(-1, token[:, None]).squeeze(-1)
            extras = {  # a rule's draws only describe mixed steps (masked, not multiplied: draws may be -inf)
                name: value.masked_fill(~use_mixture.view(n, *[1] * (value.dim() - 1)), 0)
                for name, value in mixed.extras.items()
            }
            chosen = MixtureStep(support, weights, token, extras)

            active = ~finished
            record["tokens"][:, t] = token
            record["support"][:, t] = support
            record["weights"][:, t] = weights
            record["thinking"][:, t] = use_mixture & active
            record["forced"][:, t] = forcing & active
            record["completion_mask"][:, t] = active
            record["log_likelihood"][:, t] = torch.where(
                use_mixture, rule.step_log_likelihood(log_probs, chosen, embedding), token_log_likelihood
            )
            entropy = -(probs * log_probs).sum(-1)
            record["entropy"][:, t] = entropy
            record["weight_entropy"][:, t] = weight_entropy(weights)
            for name, value in chosen.extras.items():
                recorded_extras.setdefault(name, torch.zeros(n, steps, *value.shape[1:], dtype=value.dtype, device=device))
                recorded_extras[name][:, t] = value

            think_state, think_ended = think_end.advance(think_state, token, active)
            stop_state, stopped = stop.advance(stop_state, token, active)
            think_steps += (thinking & active).long()
            cold_run = torch.where(use_mixture & active & (entropy < cold_entropy), cold_run + 1, 0)
            force_at = torch.where(forcing, force_at + 1, force_at)
            forced_all = force_at >= forced_ids.numel()
            force_at = torch.where(forced_all, -1, force_at)
            thinking = thinking & ~think_ended & ~forced_all  # forcing always ends thinking
            finished = finished | torch.isin(token, eos_ids) | stopped

            if (t + 1) % settings.sync_every == 0 and (finished_everywhere(finished) if synced else bool(finished.all())):
                used = t + 1
                break
            if t + 1 == steps:
                break
            logits = decoder.step(model, rule, chosen, t)
        decoder.release()

    trimmed = {name: value[:, :used] for name, value in record.items()}
    return Rollout(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask.bool(), truncated=~finished,
        extras={name: value[:, :used] for name, value in recorded_extras.items()}, **trimmed,
    )

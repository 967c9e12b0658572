"""Batched mixture-of-token generation over input embeddings with a KV cache (MoT-G rollout).

All prompts × group members decode together. While a sequence is *thinking* (from the prompt,
which normally ends with ``<think>``, until its representative tokens end with ``</think>``) its
next input is the mixture chosen by the rule; afterwards it samples ordinary tokens. Phase
switches, stops and budget forcing are decided on the device from token ids; the host is asked
whether every sequence has finished only every ``sync_every`` steps.

Every step is recorded (support, weights, representative token, phase, forced flag), so the loss
can rebuild exactly the input embeddings the model saw (:meth:`Rollout.input_embeddings`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from .decoder import Decoder, prompt_positions
from .distributed import finished_everywhere
from .mixture import MixtureRule, MixtureStep, sample_index, weight_entropy
from .sampling_filters import filter_log_probs
from .stops import TokenPatterns


@dataclass
class Rollout:
    """A batch of generated trajectories. ``N`` sequences, prompt length ``P``, ``T`` steps.

    Attributes:
        prompt_ids, prompt_mask: ``[N, P]`` left-padded prompts.
        tokens: ``[N, T]`` representative tokens (the text); ``pad_id`` after a sequence stops.
        support, weights: ``[N, T, k]`` each step's support and weights. Ordinary (answer-phase
            or forced) steps hold their token in every slot with weights ``(1, 0, ..., 0)``.
        thinking: ``[N, T]`` the step mixed tokens (thinking phase, not forced).
        forced: ``[N, T]`` the token was appended by budget forcing, not sampled.
        completion_mask: ``[N, T]`` the step belongs to the completion (up to and including EOS).
        truncated: ``[N]`` the sequence hit ``max_new_tokens`` without stopping.
        log_likelihood: ``[N, T]`` step log-likelihood under the policy while generating.
        entropy: ``[N, T]`` entropy of the tempered next-token distribution.
        weight_entropy: ``[N, T]`` entropy of the mixture weights.
        extras: per-step tensors ``[N, T, ...]`` a rule recorded for its likelihood.
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    tokens: Tensor
    support: Tensor
    weights: Tensor
    thinking: Tensor
    forced: Tensor
    completion_mask: Tensor
    truncated: Tensor
    log_likelihood: Tensor
    entropy: Tensor
    weight_entropy: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss_mask(self) -> Tensor:
        """Steps the policy chose itself: completion steps that were not forced."""
        return self.completion_mask & ~self.forced

    def step(self) -> MixtureStep:
        """The recorded steps as a :class:`MixtureStep` of shape ``[N, T, ...]``."""
        return MixtureStep(self.support, self.weights, self.tokens, dict(self.extras))

    def select(self, rows: slice | Tensor) -> "Rollout":
        """The rollout restricted to some rows (a micro-batch)."""
        values = {name: getattr(self, name)[rows] for name in self.__dataclass_fields__ if name != "extras"}
        return Rollout(**values, extras={name: value[rows] for name, value in self.extras.items()})

    def position_ids(self) -> Tensor:
        """``[N, P + T]`` positions: prompts count from their first real token."""
        prompt = prompt_positions(self.prompt_mask)
        steps = torch.arange(1, self.tokens.shape[1] + 1, device=self.tokens.device)
        return torch.cat([prompt, prompt[:, -1:] + steps], dim=1)

    def attention_mask(self) -> Tensor:
        """``[N, P + T]``: prompt padding hidden; steps after a stop are masked by the loss."""
        return torch.cat([self.prompt_mask.long(), torch.ones_like(self.tokens)], dim=1)

    def input_embeddings(self, embedding: nn.Module, rule: MixtureRule) -> Tensor:
        """``[N, P + T - 1, D]``: prompt embeddings then the inputs ``e_1 … e_{T-1}`` of the steps,
        rebuilt from the record (differentiable through the embedding matrix, except the mixed
        inputs of a rule whose likelihood treats them as data: :attr:`MixtureRule.detaches_inputs`)."""
        steps = rule.embed(embedding, self.step().steps(slice(None, -1)))
        if rule.detaches_inputs:
            steps = torch.where(self.thinking[:, :-1, None], steps.detach(), steps)
        return torch.cat([embedding(self.prompt_ids), steps], dim=1)


def concatenate(parts: list[Rollout]) -> Rollout:
    """Rows of several rollouts in one, prompts left-padded and steps right-padded to fit.

    Padding steps are outside the completion and hold token 0 with weights ``(1, 0, ...)``, so
    their rebuilt input is a plain token embedding.
    """
    prompt_length = max(part.prompt_ids.shape[1] for part in parts)
    steps = max(part.tokens.shape[1] for part in parts)

    def pad(value: Tensor, width: int, dim: int, left: bool, fill: float) -> Tensor:
        missing = width - value.shape[dim]
        if missing == 0:
            return value
        shape = list(value.shape)
        shape[dim] = missing
        filler = torch.full(shape, fill, dtype=value.dtype, device=value.device)
        return torch.cat([filler, value] if left else [value, filler], dim=dim)

    def join(values: list[Tensor], width: int | None, left: bool = False, fill: float = 0) -> Tensor:
        return torch.cat([value if width is None else pad(value, width, 1, left, fill) for value in values])

    fields = {
        "prompt_ids": join([p.prompt_ids for p in parts], prompt_length, left=True),
        "prompt_mask": join([p.prompt_mask for p in parts], prompt_length, left=True, fill=False),
        "truncated": join([p.truncated for p in parts], None),
    }
    for name in ("tokens", "support", "thinking", "forced", "completion_mask", "log_likelihood", "entropy", "weight_entropy"):
        fields[name] = join([getattr(p, name) for p in parts], steps)
    def padded_weights(weights: Tensor) -> Tensor:
        padded = pad(weights, steps, 1, False, 0.0)
        padded[:, weights.shape[1] :, 0] = 1.0  # a padding step is its token alone
        return padded

    fields["weights"] = torch.cat([padded_weights(p.weights) for p in parts])
    extras = {name: join([p.extras[name] for p in parts], steps) for name in parts[0].extras}
    return Rollout(**fields, extras=extras)


@contextmanager
def eval_mode(model: nn.Module):
    """Evaluation mode for generation (dropout off, KV cache allowed with gradient checkpointing)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class RolloutSettings:
    """Token-level settings of a rollout, resolved once from the tokenizer.

    Attributes:
        think_end: patterns of ``</think>``; a match ends the thinking phase.
        stop: patterns that end a sequence besides EOS (e.g. ``</answer>``).
        eos_ids: ``[E]`` ids that end a sequence.
        pad_id: id written after a sequence has stopped.
        forced_ids: ``[F]`` ids appended by budget forcing (e.g. ``</think>\\n<answer>``).
        thinking_budget: thinking steps before forcing starts; None never forces.
        force_answer_on_eos: an EOS drawn while thinking starts forcing instead of ending the
            sequence (the model said it was done; the answer is opened for it).
        cold_stop_entropy, cold_stop_steps: Soft Thinking's "cold stop" (arXiv 2505.15778):
            after ``cold_stop_steps`` consecutive thinking steps whose next-token entropy is below
            ``cold_stop_entropy`` nats, forcing starts; None never stops cold.
        max_new_tokens: steps at most.
        sync_every: steps between checks of whether every sequence has stopped.
        static_cache: preallocate the KV cache for ``P + max_new_tokens`` positions instead of
            growing it by concatenation every step. Either way each distinct prompt is run once
            and its cache shared by its copies (:meth:`Decoder.prefill`).
        top_p, min_p: filters of the distribution every rule samples and mixes from
            (:mod:`motg_lightning.sampling_filters`); the recorded likelihood is unfiltered.
        compile_decode: ``torch.compile`` mode of the decode step (``reduce-overhead`` = CUDA
            graphs on a GPU); None decodes eagerly. See :class:`motg_lightning.decoder.Decoder`.
    """

    think_end: TokenPatterns
    stop: TokenPatterns
    eos_ids: Tensor
    pad_id: int
    forced_ids: Tensor
    thinking_budget: int | None
    max_new_tokens: int
    force_answer_on_eos: bool = False
    cold_stop_entropy: float | None = None
    cold_stop_steps: int = 8
    sync_every: int = 16
    static_cache: bool = True
    top_p: float = 1.0
    min_p: float | None = None
    compile_decode: str | None = None

    def decoder(self) -> Decoder:
        """A :class:`Decoder` with these settings (keep it: a compiled one is reused across rollouts)."""
        return Decoder(static_cache=self.static_cache, compile_mode=self.compile_decode)


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

"""What a rollout records (:class:`Rollout`): for every step its support, weights,
representative token, phase and forced flag, so the loss can rebuild exactly the inputs the model
saw (:meth:`Rollout.model_inputs`); the buffers the decode loop fills one :class:`Step` at a time
(:class:`StepRecord`); a step's log-likelihood as both generation and the loss take it
(:func:`recorded_log_likelihood`); joining rollouts (:func:`concatenate`) and the evaluation mode
generation runs in (:func:`eval_mode`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .decoder import in_compute_dtype, prompt_positions
from ..rules.base import MixtureRule, MixtureStep, weight_entropy


def recorded_log_likelihood(rule: MixtureRule, log_probs: Tensor, step: MixtureStep, mixing: Tensor, embedding: nn.Module) -> Tensor:
    """``[...]`` log-likelihood of steps under their ``[..., V]`` log-probabilities: the rule's
    likelihood where the step fed its mixture (``mixing``: a thinking step), its token's
    log-probability elsewhere (answer, forced and padding steps)."""
    mixed = rule.step_log_likelihood(log_probs, step, embedding)
    token = log_probs.gather(-1, step.token.unsqueeze(-1)).squeeze(-1)
    return torch.where(mixing, mixed, token)


#: the record's buffers that start filled with the pad id (the others with 0)
_PAD_FILLED = ("tokens", "support")


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
        log_likelihood: ``[N, T]`` step log-likelihood under the policy while generating, in the
            distribution the step was drawn from (top-p / min-p filtered when a filter is on).
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

    def model_inputs(self, embedding: nn.Module, rule: MixtureRule) -> dict[str, Any]:
        """Keyword arguments of one forward over the recorded inputs (no cache), whose last ``T``
        positions give the logits of steps ``1 … T``: :meth:`input_embeddings` in autocast's compute
        dtype (:func:`.decoder.in_compute_dtype`), the attention mask and the position ids."""
        return dict(
            inputs_embeds=in_compute_dtype(self.input_embeddings(embedding, rule)),
            attention_mask=self.attention_mask()[:, :-1],
            position_ids=self.position_ids()[:, :-1],
            use_cache=False,
        )


class Step(NamedTuple):
    """One decode step of ``N`` rows, as the loop records it."""

    chosen: MixtureStep  # [N, k] the input fed to the model (its token alone where not mixing)
    mixing: Tensor  # [N] the input was the rule's mixture (thinking, not forced)
    forced: Tensor  # [N] the token was forced
    active: Tensor  # [N] the row had not stopped before this step
    log_likelihood: Tensor  # [N] under the policy (recorded_log_likelihood)
    entropy: Tensor  # [N] of the tempered next-token distribution


def write_at(buffer: Tensor, t: int | Tensor, value: Tensor) -> None:
    """``buffer[:, t] = value``. A 0-d tensor ``t`` goes through ``index_copy_``: as a subscript, the
    compiler would read it as an integer, a data-dependent value (``GuardOnDataDependentSymNode``)."""
    if isinstance(t, Tensor):
        buffer.index_copy_(1, t.view(1), value.to(buffer.dtype).unsqueeze(1))
    else:
        buffer[:, t] = value


@dataclass
class StepRecord:
    """``[N, max_new_tokens, ...]`` buffers of a rollout's :class:`Rollout` fields, filled one step
    at a time (:meth:`write`), then cut to the steps taken (:meth:`to_rollout`)."""

    buffers: dict[str, Tensor]
    extras: dict[str, Tensor] = field(default_factory=dict)  # a rule's draws

    @classmethod
    def empty(
        cls, rows: int, steps: int, k: int, pad_id: int, device: torch.device,
        extras: dict[str, tuple[torch.Size, torch.dtype]] | None = None,
    ) -> "StepRecord":
        """Buffers for ``rows`` rows of up to ``steps`` steps of support size ``k``, and for the
        rule's draws of ``extras`` (``{name: (shape after the row dim, dtype)}``, as
        :func:`.step.draw_shapes` finds them): every buffer exists before the first step, so a
        compiled step only writes into its inputs."""

        def zeros(*shape: int, dtype: torch.dtype | None = None) -> Tensor:  # [rows, steps, *shape]
            return torch.zeros(rows, steps, *shape, dtype=dtype, device=device)

        return cls({
            "tokens": zeros(dtype=torch.long).fill_(pad_id), "support": zeros(k, dtype=torch.long).fill_(pad_id),  # _PAD_FILLED
            "weights": zeros(k), "thinking": zeros(dtype=torch.bool), "forced": zeros(dtype=torch.bool),
            "completion_mask": zeros(dtype=torch.bool), "log_likelihood": zeros(), "entropy": zeros(), "weight_entropy": zeros(),
        }, {name: zeros(*shape, dtype=dtype) for name, (shape, dtype) in (extras or {}).items()})

    @classmethod
    def kept(
        cls, previous: "StepRecord | None", rows: int, steps: int, k: int, pad_id: int, device: torch.device,
        extras: dict[str, tuple[torch.Size, torch.dtype]] | None = None,
    ) -> "StepRecord":
        """A compiled decoder's record: ``previous`` cleared in place when it has the shapes of
        :meth:`empty`'s, else a new one whose buffers are marked static (a CUDA graph writes into
        its inputs' addresses: kept, they are not copied in or recorded again each rollout)."""
        fresh = cls.empty(rows, steps, k, pad_id, torch.device("meta"), extras)
        if previous is not None and previous._layout() == fresh._layout() and previous.buffers["tokens"].device == device:
            for name, value in previous._tensors().items():
                value.fill_(pad_id if name in _PAD_FILLED else 0)
            return previous
        record = cls.empty(rows, steps, k, pad_id, device, extras)
        for value in record._tensors().values():
            torch._dynamo.mark_static_address(value)
        return record

    def _tensors(self) -> dict[str, Tensor]:
        return {**self.buffers, **{f"extras.{name}": value for name, value in self.extras.items()}}

    def _layout(self) -> dict[str, tuple[torch.Size, torch.dtype]]:
        return {name: (value.shape, value.dtype) for name, value in self._tensors().items()}

    def write(self, t: int | Tensor, step: Step) -> None:
        """Record ``step`` as step ``t`` (an int, or a 0-d tensor in a compiled step), its phase
        flags only on rows still active."""
        chosen, active = step.chosen, step.active
        values = {
            "tokens": chosen.token, "support": chosen.support, "weights": chosen.weights,
            "thinking": step.mixing & active, "forced": step.forced & active, "completion_mask": active,
            "log_likelihood": step.log_likelihood, "entropy": step.entropy, "weight_entropy": weight_entropy(chosen.weights),
        }
        for name, value in values.items():
            write_at(self.buffers[name], t, value)
        missing = chosen.extras.keys() - self.extras.keys()
        if missing:
            raise KeyError(f"No record of the rule's draws {sorted(missing)}: pass their shapes to StepRecord.empty.")
        for name, value in chosen.extras.items():
            write_at(self.extras[name], t, value)

    def to_rollout(self, used: int, prompt_ids: Tensor, prompt_mask: Tensor, truncated: Tensor, copy: bool = False) -> Rollout:
        """The first ``used`` steps, with their prompts and which rows were ``truncated`` (copied
        out of the buffers with ``copy``: a :meth:`kept` record is written again by the next rollout)."""

        def cut(value: Tensor) -> Tensor:
            return value[:, :used].clone() if copy else value[:, :used]

        trimmed = {name: cut(value) for name, value in self.buffers.items()}
        extras = {name: cut(value) for name, value in self.extras.items()}
        return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask.bool(), truncated=truncated, extras=extras, **trimmed)


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

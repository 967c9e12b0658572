"""The module's settings, in small groups that each validate themselves (``model.rollout``,
``model.grpo``, ``model.memory``, ``model.evaluation``, ``model.logging`` in a config).

Every impossible value is refused when its group is built, before any model is loaded, with a
message that starts with the field as a config names it (``model.grpo.beta=-1: ...``). Options
that TRL's ``GRPOConfig`` also has keep TRL's names. A flat key of the old layout (``model.beta``)
is refused by the CLI with its new place (:data:`MOVED_KEYS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..evaluation.held_out import EvalDecoding
from ..rollout.decoder import check_compile_mode
from ..rollout.settings import RolloutSettings
from ..rollout.stops import TokenPatterns
from ..rules.filters import SamplingFilter, validate_filters
from .grpo_options import GRPOOptions
from .option_checks import at_least


@dataclass(frozen=True)
class RolloutOptions:
    """`model.rollout`: how completions are generated.

    Args:
        max_new_tokens: completion length limit (TRL's `max_completion_length`; paper: 1024).
        thinking_budget: thinking steps after which the rollout appends `forced_answer` itself
            (budget forcing, Muennighoff et al., s1, arXiv 2501.19393); 0 forces at once, None never.
        forced_answer: text appended by forcing; forced tokens are not trained on.
        force_answer_on_eos: when the model draws EOS while still thinking, append
            `forced_answer` instead of stopping (not in the paper).
        cold_stop_entropy: Soft Thinking's cold stop (arXiv 2505.15778): append `forced_answer`
            once `cold_stop_steps` thinking steps in a row have a next-token entropy below this
            many nats (> 0); None disables it.
        cold_stop_steps: low-entropy thinking steps in a row that trigger the cold stop.
        top_p: top-p (nucleus) filter of the distribution every rule samples and mixes from, in
            (0, 1] (TRL's `top_p`; Soft Thinking's filter); 1.0 keeps it all. The loss scores
            under the unfiltered distribution unless `model.grpo.loss_distribution` is `filtered`.
        min_p: min-p filter: keep the tokens at least this fraction as probable as the most
            probable one, in [0, 1) (TRL's `min_p`); None disables it.
        think_end: marker that ends the thinking phase.
        stop_strings: strings that end a completion besides EOS.
        sync_every: decode steps between checks that every sequence stopped.
        compile_decode: `torch.compile` mode of the decode step; `reduce-overhead` captures it in
            a CUDA graph (the fast setting on a GPU); None decodes eagerly.
    """

    max_new_tokens: int = 128
    thinking_budget: int | None = None
    forced_answer: str = "</think>\n<answer>"
    force_answer_on_eos: bool = False
    cold_stop_entropy: float | None = None
    cold_stop_steps: int = 8
    top_p: float = 1.0
    min_p: float | None = None
    think_end: str = "</think>"
    stop_strings: list[str] = field(default_factory=lambda: ["</answer>"])
    sync_every: int = 16
    compile_decode: str | None = None

    def __post_init__(self) -> None:
        at_least("rollout", 1, {"max_new_tokens": self.max_new_tokens, "sync_every": self.sync_every,
                                 "cold_stop_steps": self.cold_stop_steps})
        at_least("rollout", 0, {"thinking_budget": self.thinking_budget},
                  {"thinking_budget": "0 forces the answer at once, null never forces"})
        validate_filters(self.top_p, self.min_p, owner="model.rollout")
        if self.cold_stop_entropy is not None and not self.cold_stop_entropy > 0:
            raise ValueError(f"model.rollout.cold_stop_entropy={self.cold_stop_entropy}: must be > 0 nats (no entropy is "
                             "below 0); null disables the cold stop.")
        if not self.think_end:
            raise ValueError("model.rollout.think_end='': must not be empty (an empty marker would match everywhere).")
        if "" in self.stop_strings:
            raise ValueError(f"model.rollout.stop_strings={list(self.stop_strings)!r}: an empty string would end every "
                             "completion at once; remove it.")
        if self.forces and self.think_end not in self.forced_answer:
            raise ValueError(
                f"model.rollout.forced_answer={self.forced_answer!r} must contain model.rollout.think_end={self.think_end!r}: "
                "forcing ends the thinking phase by writing its end marker."
            )
        check_compile_mode(self.compile_decode, field="model.rollout.compile_decode")

    @property
    def forces(self) -> bool:
        """Whether any setting makes the rollout append `forced_answer` itself."""
        return self.thinking_budget is not None or self.force_answer_on_eos or self.cold_stop_entropy is not None

    @property
    def sampling_filter(self) -> SamplingFilter:
        """The top-p / min-p filters of :attr:`top_p` and :attr:`min_p`."""
        return SamplingFilter(self.top_p, self.min_p)

    def settings(self, tokenizer: PreTrainedTokenizerBase, eos_ids: Iterable[int]) -> RolloutSettings:
        """These options resolved into token ids with ``tokenizer``; ``eos_ids`` end a sequence."""
        forced = tokenizer.encode(self.forced_answer, add_special_tokens=False) if self.forces else []
        return RolloutSettings(
            think_end=TokenPatterns.from_strings(tokenizer, [self.think_end]),
            stop=TokenPatterns.from_strings(tokenizer, list(self.stop_strings)),
            eos_ids=torch.tensor(sorted(set(eos_ids))), pad_id=tokenizer.pad_token_id,
            forced_ids=torch.tensor(forced, dtype=torch.long), thinking_budget=self.thinking_budget,
            force_answer_on_eos=self.force_answer_on_eos, cold_stop_entropy=self.cold_stop_entropy,
            cold_stop_steps=self.cold_stop_steps, max_new_tokens=self.max_new_tokens, sync_every=self.sync_every,
            top_p=self.top_p, min_p=self.min_p, compile_decode=self.compile_decode,
        )


@dataclass(frozen=True)
class MemoryOptions:
    """`model.memory`: how the update fits in memory; none of these changes what is learned.

    Args:
        micro_batch_size: rollouts per forward/backward pass at most (memory does not grow with G).
        micro_batch_tokens: also cap a micro-batch at this many tokens (prompt + completion
            positions); None caps by `micro_batch_size` alone.
        logit_chunk_size: steps per vocabulary projection in the loss, so no float32
            rollouts × steps × vocabulary tensor is held; None projects all steps at once.
        gradient_checkpointing: recompute activations in the backward pass (TRL's
            `gradient_checkpointing`).
        shard_layer_classes: module classes sharded one by one under FSDP2 (Lightning's
            `ModelParallelStrategy`) and FSDP1 (`FSDPStrategy`, unless the strategy names its own
            `auto_wrap_policy`); default: the model's `_no_split_modules` (its decoder layers).
    """

    micro_batch_size: int = 8
    micro_batch_tokens: int | None = None
    logit_chunk_size: int | None = 16
    gradient_checkpointing: bool = False
    shard_layer_classes: list[str] | None = None

    def __post_init__(self) -> None:
        at_least("memory", 1, {"micro_batch_size": self.micro_batch_size, "micro_batch_tokens": self.micro_batch_tokens,
                                "logit_chunk_size": self.logit_chunk_size})

    def rows_per_micro_batch(self, sequence_length: int) -> int:
        """Rollouts per micro-batch for sequences of ``sequence_length`` positions."""
        if self.micro_batch_tokens is None:
            return self.micro_batch_size
        return max(1, min(self.micro_batch_size, self.micro_batch_tokens // sequence_length))


@dataclass(frozen=True)
class EvaluationOptions:
    """`model.evaluation`: how `validate` and `test` roll out.

    Args:
        decoding: `mixture` (the training rule), `sample` (discrete sampling at its
            temperature) or `greedy`.
        samples: rollouts per held-out question, for mean@k and pass@k.
    """

    decoding: EvalDecoding = "mixture"
    samples: int = 1

    def __post_init__(self) -> None:
        at_least("evaluation", 1, {"samples": self.samples})


@dataclass(frozen=True)
class LoggingOptions:
    """`model.logging`: what goes to the logger besides the per-step statistics.

    Args:
        log_completions_every_n_steps: how often sample completions are logged: every one to
            `completions.jsonl` in the run folder, and to TensorBoard's text tab or a W&B table;
            0 never.
        exploration_every_n_steps: how often the entropies along the reasoning and the
            hidden-state entropy per layer are logged (one extra forward); 0 never. Token-space
            exploration is logged every step.
    """

    log_completions_every_n_steps: int = 10
    exploration_every_n_steps: int = 10

    def __post_init__(self) -> None:
        at_least("logging", 0, {"log_completions_every_n_steps": self.log_completions_every_n_steps,
                                 "exploration_every_n_steps": self.exploration_every_n_steps},
                  {"log_completions_every_n_steps": "0 never logs completions",
                   "exploration_every_n_steps": "0 never logs the exploration entropies"})


@dataclass(frozen=True)
class ModuleOptions:
    """The five groups together, as the module reads them (``module.options.grpo.beta``)."""

    rollout: RolloutOptions
    grpo: GRPOOptions
    memory: MemoryOptions
    evaluation: EvaluationOptions
    logging: LoggingOptions

    def __post_init__(self) -> None:
        if self.grpo.loss_distribution == "filtered" and not self.rollout.sampling_filter.active:
            warnings.warn("model.grpo.loss_distribution=filtered without model.rollout.top_p or min_p: nothing is filtered, "
                          "so it scores as unfiltered does.", stacklevel=3)

    @classmethod
    def of(cls, **groups: Any) -> ModuleOptions:
        """The groups given, each an options object or a mapping of its fields (as a checkpoint's
        hyperparameters saved by the CLI hold them)."""
        return cls(**{name: value if isinstance(value, GROUPS[name]) else GROUPS[name](**value) for name, value in groups.items()})

    @property
    def loss_filter(self) -> SamplingFilter | None:
        """The filters the loss scores steps under: the rollout's top-p / min-p with
        `grpo.loss_distribution: filtered`, else None (the whole tempered distribution)."""
        if self.grpo.loss_distribution == "unfiltered":
            return None
        return self.rollout.sampling_filter

    def as_dicts(self) -> dict[str, dict[str, Any]]:
        """Each group as a mapping of its fields."""
        return {name: asdict(getattr(self, name)) for name in GROUPS}


GROUPS: dict[str, type] = {
    "rollout": RolloutOptions, "grpo": GRPOOptions, "memory": MemoryOptions, "evaluation": EvaluationOptions,
    "logging": LoggingOptions,
}
#: every key of the old flat layout under ``model`` and where it lives now
MOVED_KEYS: dict[str, str] = {
    **{f.name: f"{group}.{f.name}" for group, options in GROUPS.items() for f in fields(options)
       if group != "evaluation"},
    "eval_decoding": "evaluation.decoding", "eval_samples": "evaluation.samples",
}

"""Token-level settings of a rollout, resolved once from the tokenizer (:class:`RolloutSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..rules.filters import SamplingFilter
from .decoder import Decoder
from .stops import TokenPatterns


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
            (:mod:`motg_lightning.rules.filters`), under which each step's likelihood is recorded.
        compile_decode: ``torch.compile`` mode of the decode step (``reduce-overhead`` = CUDA
            graphs on a GPU); None decodes eagerly. See :class:`motg_lightning.rollout.decoder.Decoder`.
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

    @property
    def sampling_filter(self) -> SamplingFilter:
        """The filters of :attr:`top_p` and :attr:`min_p`."""
        return SamplingFilter(self.top_p, self.min_p)

    def decoder(self) -> Decoder:
        """A :class:`Decoder` with these settings (keep it: a compiled one is reused across rollouts)."""
        return Decoder(static_cache=self.static_cache, compile_mode=self.compile_decode)

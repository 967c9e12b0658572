"""The model side of a rollout: one prefill per distinct prompt, then one-position decode steps.

A :class:`Decoder` owns the KV cache of a rollout and runs its decode steps
(:func:`.step.decode_step`). With ``static_cache`` the cache is a preallocated
:class:`~transformers.StaticCache` and every decode step has the same shapes (the attention mask
spans the whole cache; causality hides the positions not written yet), so the whole step can be
compiled once: the rule's choice and its random draws, the phase switch, forcing, stop detection,
the writes into the step record at a step index held in a 0-d tensor, then the model's forward.
``compile_mode="reduce-overhead"`` captures it in a CUDA graph on a GPU, which removes the
per-kernel launch cost that dominates decoding small models. A compiled decoder keeps its cache
between rollouts (reset in place), because a CUDA graph is tied to the cache's addresses.

Compiling never changes what is sampled: the random ops draw from the same generator in the same
order as eagerly; with the ``inductor`` backend the decoder sets inductor's ``fallback_random``
option so that its kernels call PyTorch's own random ops instead of generating their own numbers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformers import Cache, DynamicCache, PreTrainedModel, StaticCache

from ..rules.base import MixtureRule, MixtureStep


def prompt_positions(prompt_mask: Tensor) -> Tensor:
    """Position ids of left-padded prompts: each prompt counts from its first real token."""
    return (prompt_mask.long().cumsum(-1) - 1).clamp_min(0)


def check_compile_mode(mode: str | None, field: str = "model.rollout.compile_decode") -> None:
    """Refuse at start-up a ``torch.compile`` mode that torch does not know (it would fail only
    at the first rollout). None (eager decoding) is always valid."""
    if mode is None:
        return
    import torch._inductor  # the modes' list; imported only when compiling is asked for

    modes = list(torch._inductor.list_mode_options())
    if mode not in modes:
        raise ValueError(f"{field}={mode!r}: not a torch.compile mode; choose one of {', '.join(modes)}, or null.")


def in_compute_dtype(embeddings: Tensor) -> Tensor:
    """Input embeddings in autocast's compute dtype when autocast is on (Lightning's ``*-mixed``
    precisions), else unchanged.

    Fed float32 under autocast, a transformer's rotary embedding runs in float32 and promotes the
    keys to float32 while the values stay in the compute dtype; a KV cache holds one dtype, so the
    next write fails (``index_copy_``: "expected to have the same dtype" on CUDA). In the compute
    dtype, keys and values agree, and the training forward sees the rollout's numerics."""
    device_type = embeddings.device.type
    if torch.is_autocast_enabled(device_type):
        return embeddings.to(torch.get_autocast_dtype(device_type))
    return embeddings


def cache_keyword(model: PreTrainedModel) -> str:
    """``cache`` on transformers ≥ 5.20 (where ``past_key_values`` is deprecated), else the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def decode_forward(
    model: PreTrainedModel, rule: MixtureRule, chosen: MixtureStep,
    attention: Tensor, next_position: Tensor, cache: dict[str, Cache], t: int | Tensor,
) -> Tensor:
    """Next-token logits ``[N, V]`` after feeding each row's mixture chosen at decode step ``t``
    (from 0; ``next_position``: ``[N, 1]`` the position of step 0)."""
    inputs = in_compute_dtype(rule.embed(model.get_input_embeddings(), chosen))[:, None]
    output = model(inputs_embeds=inputs, attention_mask=attention, position_ids=next_position + t, use_cache=True, **cache)
    return output.logits[:, -1]


def compile_options(mode: str, backend: str | Callable) -> dict[str, Any]:
    """``torch.compile`` keywords of a decode step in ``mode``: one graph (``fullgraph``) of fixed
    shapes (``dynamic=False``); for ``inductor``, the mode's options plus ``fallback_random``, so
    that compiled random ops draw exactly what eager ones do (``mode`` and ``options`` cannot both
    be given to ``torch.compile``: the mode is passed as its options)."""
    keywords: dict[str, Any] = {"backend": backend, "fullgraph": True, "dynamic": False}
    if backend == "inductor":
        import torch._inductor  # the modes' options; imported only when compiling is asked for

        keywords["options"] = {**torch._inductor.list_mode_options(mode), "fallback_random": True}
    else:
        keywords["mode"] = mode
    return keywords


class Decoder:
    """Prefill and decode forwards of a causal LM over a KV cache, optionally compiled.

    Args:
        static_cache: preallocate the cache for the whole rollout instead of growing it by
            concatenation every step.
        compile_mode: ``torch.compile`` mode of the whole decode step (``"reduce-overhead"`` uses
            CUDA graphs, ``"default"``, ``"max-autotune"``, ...); None runs it eagerly. Needs
            ``static_cache``. Compiled once per rule (and model) for the decoder's life.
        compile_backend: ``torch.compile`` backend (``"inductor"``, with ``fallback_random`` set:
            :func:`compile_options`; ``"aot_eager"`` checks capture without generating kernels).
        length_multiple: a compiled decoder rounds the cache length up to a multiple of this, so
            prompts of slightly different lengths reuse one compiled step and one cache.
    """

    def __init__(
        self, static_cache: bool = True, compile_mode: str | None = None, compile_backend: str | Callable = "inductor",
        length_multiple: int = 64,
    ):
        if compile_mode is not None and not static_cache:
            raise ValueError(f"compile_decode={compile_mode!r} needs static_cache=true: a growing cache changes shape every step.")
        self.static_cache, self.compile_mode, self.length_multiple = static_cache, compile_mode, length_multiple
        self._compile = compile_options(compile_mode, compile_backend) if compile_mode is not None else None
        self._steps: dict[Callable, Callable] = {}  # each step function, compiled once
        self._kept: StaticCache | None = None  # a compiled decoder's cache, reused while its shape fits
        self.kept_record: Any = None  # a compiled decoder's step record (:meth:`.record.StepRecord.kept`)
        self._state: dict[str, Any] = {}

    def _static_cache(self, model: PreTrainedModel, rows: int, length: int, dtype: torch.dtype, device: torch.device) -> StaticCache:
        if self.compile_mode is None:
            return StaticCache(config=model.config, max_cache_len=length)
        kept = self._kept
        layer = kept.layers[0] if kept is not None else None
        fits = (
            layer is not None and layer.is_initialized and layer.max_cache_len == length
            and layer.keys.shape[0] == rows and layer.keys.dtype == dtype and layer.keys.device == device
        )
        if fits:
            kept.reset()
        else:
            self._kept = kept = StaticCache(config=model.config, max_cache_len=length)
        return kept

    def prefill(self, model: PreTrainedModel, prompt_ids: Tensor, prompt_mask: Tensor, steps: int) -> Tensor:
        """Run each distinct prompt once and share its cache with its copies (a GRPO group);
        return the ``[N, V]`` next-token logits of every row. Room is made for ``steps`` more."""
        rows, prompt_length = prompt_ids.shape
        distinct, row_of = torch.unique(torch.cat([prompt_ids, prompt_mask.long()], dim=1), dim=0, return_inverse=True)
        ids, mask = distinct[:, :prompt_length], distinct[:, prompt_length:]
        shared = DynamicCache(config=model.config)
        keyword = cache_keyword(model)
        output = model(
            inputs_embeds=in_compute_dtype(model.get_input_embeddings()(ids)), attention_mask=mask,
            position_ids=prompt_positions(mask), use_cache=True, logits_to_keep=1, **{keyword: shared},
        )
        length = prompt_length + steps
        if self.static_cache:
            if self.compile_mode is not None:
                length = -(-length // self.length_multiple) * self.length_multiple
            first = shared.layers[0].keys
            cache: Cache = self._static_cache(model, rows, length, first.dtype, first.device)
            for index, layer in enumerate(shared.layers):
                cache.update(layer.keys[row_of], layer.values[row_of], index)
        else:
            shared.batch_select_indices(row_of)
            cache = shared
        attention = torch.ones(rows, length, dtype=torch.long, device=prompt_ids.device)
        attention[:, :prompt_length] = prompt_mask.long()
        self._state = {
            "cache": {keyword: cache}, "attention": attention, "prompt_length": prompt_length,
            "next_position": prompt_positions(prompt_mask)[:, -1:] + 1,
        }
        return output.logits[:, -1][row_of]

    @property
    def compiled(self) -> bool:
        """Whether decode steps run compiled."""
        return self._compile is not None

    def step_function(self, function: Callable) -> Callable:
        """``function`` (a decode step, :func:`.step.decode_step`), compiled on its first call when
        ``compile_mode`` is set (and kept: one compilation per rule serves every later rollout)."""
        if function not in self._steps:
            self._steps[function] = function if self._compile is None else torch.compile(function, **self._compile)
        return self._steps[function]

    def step_inputs(self, step: int) -> dict[str, Any]:
        """What :func:`decode_forward` needs besides the chosen inputs at decode step ``step`` (from
        0): the attention mask (the whole cache when static, so the same every step), the position
        of step 0 and the cache."""
        state = self._state
        attention = state["attention"]
        if not self.static_cache:
            attention = attention[:, : state["prompt_length"] + step + 1]
        return {"attention": attention, "next_position": state["next_position"], "cache": state["cache"]}

    def release(self) -> None:
        """Drop the rollout's state (a compiled decoder keeps its cache for the next rollout)."""
        self._state = {}

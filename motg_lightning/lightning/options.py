"""Start-up checks of :class:`motg_lightning.lightning.module.MoTGRPOModule`'s options: each impossible value
is refused before any model is loaded, the message starting with the field as a config names it."""

from __future__ import annotations

from typing import Any

from ..rollout.decoder import check_compile_mode
from ..models import check_model_name
from ..rules.filters import validate_filters


def check_options(o: Any) -> None:
    """Raise ``ValueError("model.<field>=<value>: ...")`` for the first option of ``o`` (the
    module's hyperparameters, read as attributes) that cannot work."""
    if o.num_generations < 2:
        raise ValueError(f"model.num_generations={o.num_generations}: GRPO needs groups of at least 2.")
    at_least_one = {
        "max_new_tokens": o.max_new_tokens, "num_iterations": o.num_iterations, "micro_batch_size": o.micro_batch_size,
        "micro_batch_tokens": o.micro_batch_tokens, "logit_chunk_size": o.logit_chunk_size, "sync_every": o.sync_every,
        "ref_model_sync_steps": o.ref_model_sync_steps, "cold_stop_steps": o.cold_stop_steps,
        "max_sampling_rounds": o.max_sampling_rounds, "eval_samples": o.eval_samples,
        "max_nonfinite_updates": o.max_nonfinite_updates,
    }
    for name, value in at_least_one.items():
        if value is not None and value < 1:
            raise ValueError(f"model.{name}={value}: must be at least 1.")
    if not 0 < o.top_entropy_quantile <= 1:
        raise ValueError(f"model.top_entropy_quantile={o.top_entropy_quantile}: must be in (0, 1]; 1.0 trains on every step.")
    validate_filters(o.top_p, o.min_p)
    if not 0 < o.epsilon < 1 or (o.epsilon_high is not None and not 0 < o.epsilon_high):
        raise ValueError(f"model.epsilon={o.epsilon}, model.epsilon_high={o.epsilon_high}: the clip range needs 0 < epsilon < 1 "
                         "and epsilon_high > 0 (TRL's defaults: 0.2 and epsilon).")
    if not o.beta >= 0:
        raise ValueError(f"model.beta={o.beta}: the KL weight must be >= 0 (0 loads no reference model).")
    if not 0 <= o.ref_model_mixup_alpha <= 1:
        raise ValueError(f"model.ref_model_mixup_alpha={o.ref_model_mixup_alpha}: must be in [0, 1].")
    if o.sync_ref_model and o.beta == 0:
        raise ValueError("model.sync_ref_model=true needs a reference model: set model.beta to a non-zero value.")
    forcing = o.thinking_budget is not None or o.force_answer_on_eos or o.cold_stop_entropy is not None
    if forcing and o.think_end not in o.forced_answer:
        raise ValueError(
            f"model.forced_answer={o.forced_answer!r} must contain model.think_end={o.think_end!r}: "
            "forcing ends the thinking phase by writing its end marker."
        )
    at_least_zero = {
        "thinking_budget": (o.thinking_budget, "0 forces the answer at once, null never forces"),
        "log_completions_every_n_steps": (o.log_completions_every_n_steps, "0 never logs completions"),
        "exploration_every_n_steps": (o.exploration_every_n_steps, "0 never logs the exploration entropies"),
    }
    for name, (value, meaning) in at_least_zero.items():
        if value is not None and value < 0:
            raise ValueError(f"model.{name}={value}: must be >= 0 ({meaning}).")
    if o.max_grad_norm is not None and not o.max_grad_norm > 0:
        raise ValueError(f"model.max_grad_norm={o.max_grad_norm}: must be > 0; null disables gradient clipping.")
    if o.cold_stop_entropy is not None and not o.cold_stop_entropy > 0:
        raise ValueError(f"model.cold_stop_entropy={o.cold_stop_entropy}: must be > 0 nats (no entropy is below 0); "
                         "null disables the cold stop.")
    if not o.think_end:
        raise ValueError("model.think_end='': must not be empty (an empty marker would match everywhere).")
    if "" in o.stop_strings:
        raise ValueError(f"model.stop_strings={list(o.stop_strings)!r}: an empty string would end every completion "
                         "at once; remove it.")
    check_compile_mode(o.compile_decode)
    check_model_name(o.model_name_or_path)

"""Loading the policy (and the frozen reference) for training, and the checks that need them:
refusals raised before the first rollout, each naming the setting to change."""

from __future__ import annotations

import copy
from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from ..adapters import add_adapters
from ..grpo.likelihood import SHARDED_METHOD, log_likelihood_of_steps
from ..models import load_causal_lm
from ..rules import MixtureRule, attach_rule_parameters
from .distributed import layer_classes, register_forward_method, shard_fully
from .options import GRPOOptions, MemoryOptions, RolloutOptions


def load_policy_and_reference(
    name: str, dtype: str, memory: MemoryOptions, with_reference: bool, mesh: Any = None, lora: Any = None,
    rule: MixtureRule | None = None,
) -> tuple[nn.Module, nn.Module | None]:
    """The policy in training mode, carrying the parameters ``rule`` trains (if any:
    :mod:`motg_lightning.rules.parameters`), and, ``with_reference``, a frozen copy of it; both
    sharded layer by layer over ``mesh``'s data-parallel dimension when one is given (FSDP2). With a
    ``lora`` config the policy carries adapters and no copy is made: the reference is the policy
    with its adapters disabled (:func:`motg_lightning.adapters.reference_model`)."""
    policy = load_causal_lm(name, dtype, memory.gradient_checkpointing).train()
    if rule is not None:
        attach_rule_parameters(policy, rule)
    if lora is not None:
        policy = add_adapters(policy, lora).train()
    reference = copy.deepcopy(policy).requires_grad_(False).eval() if with_reference and lora is None else None
    if mesh is not None:
        classes = layer_classes(policy, memory.shard_layer_classes)
        for model in (policy, reference):
            if model is not None:
                shard_fully(model, mesh["data_parallel"], classes)
                register_forward_method(model, SHARDED_METHOD, log_likelihood_of_steps)
    return policy, reference


def refuse_unsupported(strategy: Any, grpo: GRPOOptions, adapted: bool) -> None:
    """Combinations that cannot work, refused before any model is loaded."""
    if adapted and grpo.sync_ref_model:
        raise ValueError(
            "model.grpo.sync_ref_model=true with model.peft: with adapters the reference is the frozen base model "
            "(the policy with its adapters disabled), which cannot move towards the policy; set one of them off."
        )
    if adapted and isinstance(strategy, FSDPStrategy):
        raise ValueError(
            "model.peft with trainer.strategy=FSDPStrategy (FSDP1): FSDP1 keeps the frozen base and the adapters in the "
            "same flat parameters, with gradients for all of them, which undoes what adapters save; use FSDP2 "
            "(--config configs/strategy/fsdp2.yaml) or ddp."
        )
    if isinstance(strategy, FSDPStrategy) and grpo.beta != 0:
        beta = grpo.beta
        raise ValueError(
            f"model.grpo.beta={beta} with trainer.strategy=FSDPStrategy (FSDP1): the reference model would be its own "
            "FSDP1 root, whose embedding and LM head stay sharded outside its forward, where the loss uses them; use "
            "FSDP2 (--config configs/strategy/fsdp2.yaml), ddp, or model.grpo.beta=0."
        )


def check_support(rule: MixtureRule, policy: nn.Module) -> None:
    vocabulary = policy.get_input_embeddings().num_embeddings
    if rule.k > vocabulary:
        raise ValueError(f"model.mixture.k={rule.k}: above the model's vocabulary of {vocabulary} tokens.")


def check_lengths(policy: nn.Module, longest_prompt: int, rollout: RolloutOptions, memory: MemoryOptions) -> None:
    """Refuse settings under which the longest prompt cannot be trained on."""
    needed = longest_prompt + rollout.max_new_tokens
    context = getattr(policy.config, "max_position_embeddings", None)
    if context is not None and needed > context:
        raise ValueError(
            f"model.rollout.max_new_tokens={rollout.max_new_tokens}: with the longest prompt ({longest_prompt} tokens) a "
            f"sequence needs {needed} positions, beyond the model's context of {context}; lower it or set data.max_prompt_length."
        )
    if memory.micro_batch_tokens is not None and needed > memory.micro_batch_tokens:
        raise ValueError(
            f"model.memory.micro_batch_tokens={memory.micro_batch_tokens}: one sequence (longest prompt {longest_prompt} + "
            f"max_new_tokens {rollout.max_new_tokens} = {needed} tokens) does not fit; raise it to at least {needed}."
        )


def eos_ids(tokenizer: Any, policy: nn.Module) -> set[int]:
    """The ids that end a sequence: the tokenizer's EOS and the model's generation config's."""
    configured = policy.generation_config.eos_token_id
    configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    return {tokenizer.eos_token_id, *configured} - {None}

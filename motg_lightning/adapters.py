"""Low-rank adapters (LoRA, Hu et al., arXiv 2106.09685) through PEFT, the library TRL uses.

``model.peft`` takes the short form :class:`LoraOptions` (``r``, ``lora_alpha``,
``lora_dropout``, ``target_modules``) or a whole ``peft.LoraConfig`` (``class_path`` in YAML).
With adapters:

* the policy is the base model wrapped by ``peft.get_peft_model``: only the adapters train, and
  the rollout, the loss and the KL all run through the adapted network for every rule (the mixture
  inputs go through the base input embedding, which is never adapted);
* the reference model of ``beta > 0`` is the same network with its adapters disabled
  (:func:`reference_model`), as TRL does: no second copy of the weights;
* checkpoints hold the adapter weights (:func:`trainable_entries`) and their optimizer state, not
  the frozen base, which is loaded again from ``model_name_or_path`` on resume (FSDP2's sharded
  checkpoints too, through this library's ``FSDP2Strategy``);
* export writes the merged weights, or the adapter alone (``motg_lightning.export``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from torch import nn

from .rules.parameters import RULE_PARAMETERS

#: what `model.peft` accepts: the short form, a whole `peft.LoraConfig`, or a mapping of either's
#: fields (as a checkpoint's hyperparameters hold them); None trains every weight
PeftSetting = Any


@dataclass(frozen=True)
class LoraOptions:
    """`model.peft`, short form: LoRA adapters on the decoder's linear layers.

    Args:
        r: rank of each adapter's update, at least 1.
        lora_alpha: scale of the update (PEFT's `lora_alpha`; the update is scaled by alpha / r).
        lora_dropout: dropout on the adapter's input, in [0, 1).
        target_modules: names of the modules to adapt, or `all-linear` (PEFT's shorthand for every
            linear layer of the decoder, the output layer excluded).
    """

    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"

    def check(self) -> None:
        """Refuse impossible values, naming the field. Called when the module is built, not at
        construction: the command line tries this short form before a whole `peft.LoraConfig`, and
        a value refused here must not fall through to PEFT's own, less precise, message."""
        if self.r < 1:
            raise ValueError(f"model.peft.r={self.r}: the adapter rank must be at least 1.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"model.peft.lora_dropout={self.lora_dropout}: must be in [0, 1).")
        if not self.target_modules:
            raise ValueError("model.peft.target_modules is empty: name the modules to adapt, or all-linear.")

    def lora_config(self) -> Any:
        """The same settings as a ``peft.LoraConfig`` for a causal LM (checked first)."""
        from peft import LoraConfig

        self.check()
        target = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(task_type="CAUSAL_LM", r=self.r, lora_alpha=self.lora_alpha,
                          lora_dropout=self.lora_dropout, target_modules=target)


def lora_config(setting: PeftSetting) -> Any:
    """``model.peft`` as a ``peft.LoraConfig`` (None stays None).

    Accepts :class:`LoraOptions`, a ``peft.LoraConfig``, or either as a checkpoint's
    hyperparameters hold it (:func:`setting_as_dict`): the short form's fields, or
    ``{class_path: peft.LoraConfig, init_args: {...}}``."""
    from peft import LoraConfig

    if setting is None or isinstance(setting, LoraConfig):
        return setting
    if isinstance(setting, LoraOptions):
        return setting.lora_config()
    if isinstance(setting, Mapping):
        if "class_path" in setting:
            return LoraConfig(**setting.get("init_args", {}))
        return LoraOptions(**setting).lora_config()
    raise ValueError(f"model.peft={setting!r}: give the short form (r, lora_alpha, lora_dropout, target_modules) "
                     "or a peft.LoraConfig (class_path: peft.LoraConfig).")


def setting_as_dict(setting: PeftSetting) -> dict[str, Any] | None:
    """``model.peft`` as plain data for the hyperparameters, in the shape the command line takes
    (so that ``--ckpt_path`` can merge it into the parsed config) and :func:`lora_config` reads back:
    the short form's fields, or ``{class_path: peft.LoraConfig, init_args: {...}}``."""
    if setting is None or isinstance(setting, Mapping):
        return None if setting is None else dict(setting)
    if isinstance(setting, LoraOptions):
        return asdict(setting)
    return {"class_path": "peft.LoraConfig", "init_args": config_as_dict(setting)}


def config_as_dict(config: Any) -> dict[str, Any]:
    """A ``LoraConfig``'s constructor arguments as plain data (sets become sorted lists,
    enumerations their values; fields the constructor does not take are left out)."""
    def plain(value: Any) -> Any:
        return sorted(value) if isinstance(value, set) else value.value if isinstance(value, Enum) else value

    fields = type(config).__dataclass_fields__
    plain = {key: plain(value) for key, value in config.to_dict().items() if key in fields and fields[key].init}
    return {key: value for key, value in plain.items() if value is None or isinstance(value, (str, int, float, bool, list, dict))}


def add_adapters(model: nn.Module, config: Any) -> nn.Module:
    """``model`` wrapped by ``peft.get_peft_model``: its weights frozen, the adapters trainable.

    Refuses adapters on the input embedding: the mixture rules read its weight matrix directly
    (the dense rules mix over the whole vocabulary), which would bypass an adapter there. The
    parameters a rule trains (:mod:`motg_lightning.rules.parameters`) are PEFT ``modules_to_save``."""
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    if config.task_type is None:
        config.task_type = "CAUSAL_LM"
    if getattr(model.get_input_embeddings(), RULE_PARAMETERS, None) is not None:
        # a rule's own parameters (HRPO's gate) train whole, beside the adapters
        config = copy.copy(config)
        config.modules_to_save = [*(config.modules_to_save or []), RULE_PARAMETERS]
    adapted = get_peft_model(model, config)
    if isinstance(adapted.get_input_embeddings(), LoraLayer):
        raise ValueError(
            f"model.peft.target_modules={config.target_modules}: adapts the input embedding, which the mixture rules "
            "use directly (weighted sums of its rows); leave it out (all-linear does)."
        )
    return adapted


def is_adapted(model: nn.Module | None) -> bool:
    """Whether ``model`` is a PEFT model (its adapters train, the base is frozen)."""
    return model is not None and hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def reference_model(policy: nn.Module, reference: nn.Module | None) -> Any:
    """A context giving the model whose likelihoods are the KL's reference: the frozen copy when
    there is one, else, with adapters, the policy with its adapters disabled."""
    if reference is not None:
        return nullcontext(reference)
    if not is_adapted(policy):
        raise ValueError("no reference model: it is loaded only for model.grpo.beta != 0.")
    return _adapters_disabled(policy)


@contextmanager
def _adapters_disabled(policy: nn.Module) -> Iterator[nn.Module]:
    with policy.disable_adapter():
        yield policy


def trainable_names(module: nn.Module) -> list[str]:
    """The names of ``module``'s trainable parameters (with adapters: the adapters alone)."""
    return [name for name, parameter in module.named_parameters() if parameter.requires_grad]


def trainable_entries(state_dict: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
    """The entries of ``module``'s ``state_dict`` that belong to trainable parameters (with
    adapters: the adapters alone, not the frozen base)."""
    trainable = set(trainable_names(module))
    return {key: value for key, value in state_dict.items() if key in trainable}


def check_adapter_entries(state_dict: Mapping[str, Any], module: nn.Module, where: str) -> None:
    """Refuse a checkpoint that lacks some trainable parameter of ``module`` (one saved without
    ``model.peft``, or with other target modules)."""
    trainable = trainable_names(module)
    missing = [name for name in trainable if name not in state_dict]
    if missing:
        raise ValueError(
            f"{where}: the checkpoint has no weights for {len(missing)} of the {len(trainable)} adapter parameters "
            f"(first: {missing[0]}); it was saved with another model.peft setting (or none): resume with the same one."
        )


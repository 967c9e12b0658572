"""Parameters a mixture rule trains with the policy (HRPO's gate): where they live and how the
rule finds them.

A rule that owns parameters builds them as one module (:meth:`MixtureRule.build_parameters`),
which :func:`attach_rule_parameters` adds to the policy's input embedding under the name
:data:`RULE_PARAMETERS`. There they are the model's own: the optimizer trains them (at the rule's
learning-rate scale, :meth:`MixtureRule.learning_rate_scale`), checkpoints save them, FSDP shards
them with the embedding, a reference copy of the model keeps their initial values, and under LoRA
they are PEFT ``modules_to_save`` (trained whole; the reference, adapters disabled, uses the
initial copy). The rule reads them through the input embedding that the rollout and the loss
already hand it (:meth:`MixtureRule.embed`), so nothing else changes, and no other rule does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .base import MixtureRule

#: the name of a rule's parameters on the input embedding (and in state dicts: ``...embed_tokens.mixture_rule.*``)
RULE_PARAMETERS = "mixture_rule"
#: the file an exported model folder keeps them in, beside the Hugging Face weights
RULE_PARAMETERS_FILE = "mixture_rule.safetensors"


def attach_rule_parameters(model: nn.Module, rule: MixtureRule) -> nn.Module | None:
    """Give ``model`` the parameters ``rule`` trains, built for its input embedding (once: a model
    that carries them keeps its own); None for a rule without parameters."""
    embedding = model.get_input_embeddings()
    attached = getattr(embedding, RULE_PARAMETERS, None)
    if attached is not None:
        return attached
    module = rule.build_parameters(embedding)
    if module is not None:
        embedding.add_module(RULE_PARAMETERS, module)
    return module


def rule_parameters(embedding: nn.Module, rule: MixtureRule) -> nn.Module:
    """The parameters of ``rule`` that ``embedding`` carries; a clear error when it carries none."""
    module = getattr(embedding, RULE_PARAMETERS, None)
    if module is None:
        raise RuntimeError(
            f"{type(rule).__name__} trains parameters of its own, which this model does not carry: attach them first with "
            "motg_lightning.rules.attach_rule_parameters(model, rule) (MoTGRPOModule does so when it loads the policy)."
        )
    return module


def owns_parameters(name: str) -> bool:
    """Whether a parameter ``name`` of the policy (any prefix: PEFT's, FSDP's) is a rule's."""
    return f"{RULE_PARAMETERS}." in name


def save_rule_parameters(tensors: Mapping[str, Tensor], folder: str | Path) -> Path:
    """Write a rule's parameters (state-dict entries of the causal LM, any prefix) to
    :data:`RULE_PARAMETERS_FILE` in ``folder``, keyed by their names inside the rule's module."""
    from safetensors.torch import save_file

    path = Path(folder) / RULE_PARAMETERS_FILE
    save_file({key.rsplit(f"{RULE_PARAMETERS}.", 1)[1]: value.contiguous() for key, value in tensors.items()}, path)
    return path


def load_rule_parameters(model: nn.Module, rule: MixtureRule, folder: str | Path) -> nn.Module:
    """Put the parameters ``rule`` trained, as an export wrote them to ``folder``, on ``model``
    (a Hugging Face model loaded from the same folder), ready for :func:`motg_lightning.rollout.generate`."""
    from safetensors.torch import load_file

    path = Path(folder) / RULE_PARAMETERS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no parameters of {type(rule).__name__} here; export the checkpoint it was trained in.")
    module = attach_rule_parameters(model, rule)
    if module is None:
        raise ValueError(f"{type(rule).__name__} trains no parameters of its own: {path} belongs to another rule.")
    module.load_state_dict(load_file(path, device=str(model.get_input_embeddings().weight.device)))
    return module

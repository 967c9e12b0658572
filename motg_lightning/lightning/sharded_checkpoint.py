"""Loading FSDP2's checkpoints when the policy carries adapters (``model.peft``).

A checkpoint of an adapted policy holds the adapters and their optimizer state, not the frozen
base, which is loaded from ``model_name_or_path`` (:mod:`motg_lightning.lightning.checkpoint_hooks`).
Lightning's ``ModelParallelStrategy`` reads every entry of the model from a checkpoint, so
:class:`~motg_lightning.lightning.distributed.FSDP2Strategy` loads through :func:`load_checkpoint`:
from a folder of shards it reads the trainable entries only (``ignore_frozen_params``); from a
single file it loads the module non-strictly. Either way a checkpoint that lacks an entry the
module trains is refused first, naming ``model.peft``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import trainable_entries, trainable_names

#: Lightning's file of everything but the weights and optimizer states, beside the shards
METADATA_FILE = "meta.pt"
DCP_INDEX = ".metadata"  # torch.distributed.checkpoint's index file in a folder of shards
_MODEL_KEY = "state_dict"


def has_frozen_parameters(model: nn.Module) -> bool:
    """Whether part of ``model`` is frozen (an adapted policy)."""
    return any(not parameter.requires_grad for parameter in model.parameters())


def is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / DCP_INDEX).is_file()


def _trained_entries(model: nn.Module) -> dict[str, Any]:
    """``model``'s state dict entries of trainable parameters (``ignore_frozen_params`` keeps a
    frozen tied output layer)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return trainable_entries(get_model_state_dict(model), model)


def check_entries(path: Path, model: nn.Module) -> None:
    """Refuse a folder of shards that lacks some trained entry of ``model`` (saved with another
    ``model.peft`` setting, or none), before torch.distributed.checkpoint fails on it."""
    from torch.distributed.checkpoint import FileSystemReader

    saved = {key.split(".", 1)[1] for key in FileSystemReader(path).read_metadata().state_dict_metadata
             if key.startswith(_MODEL_KEY + ".")}
    missing = sorted(set(trainable_names(model)) - saved)
    if missing:
        raise ValueError(
            f"--ckpt_path={path}: the checkpoint has no weights for {len(missing)} of the module's trained parameters "
            f"(first: {missing[0]}); it was saved with another model.peft setting (or none): give the one it was trained "
            f"with (its hyperparameters are in {path / METADATA_FILE})."
        )


def load_adapted(path: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer], weights_only: bool | None) -> dict[str, Any]:
    """Load the trained entries of ``model`` and the ``optimizers``' states from the folder of
    shards ``path`` (as Lightning saves them: ``state_dict`` and ``optimizer_<i>``); return the
    rest of the checkpoint (loops, callbacks, hyperparameters), as Lightning's loader does."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {_MODEL_KEY: _trained_entries(model)}  # the caller has checked the folder's entries (check_entries)
    load(state, checkpoint_id=path)
    set_model_state_dict(model, state[_MODEL_KEY], options=StateDictOptions(strict=False))
    for index, optimizer in enumerate(optimizers):
        key = f"optimizer_{index}"
        optimizer_state = {key: get_optimizer_state_dict(model, optimizer)}
        load(optimizer_state, checkpoint_id=path)
        set_optimizer_state_dict(model, optimizer, optim_state_dict=optimizer_state[key],
                                 options=StateDictOptions(cpu_offload=True))
    return torch.load(path / METADATA_FILE, weights_only=weights_only)

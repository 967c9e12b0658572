"""What a rollout needs to run under Lightning's distributed strategies (DDP, FSDP, FSDP2).

* Every rank rolls out its own prompts, each with its whole group, so group statistics are exact
  without communication; the loss normaliser and logged metrics are reduced, and the statistics
  TRL takes over the whole batch (the ``batch`` reward std, the entropy quantile) are taken over
  every rank's rows, gathered by :func:`motg_lightning.collectives.gather_rows`.
* FSDP1 (Lightning's ``FSDPStrategy``) wraps each decoder layer with the policy
  :func:`fsdp1_wrap_policy` gives it.
* With sharded parameters every forward is a collective, so ranks must run the same number of
  decode steps: :func:`motg_lightning.collectives.finished_everywhere` stops a rollout only when every rank is done (as
  ``synced_gpus`` does in Hugging Face ``generate``).
* FSDP2 (:class:`FSDP2Strategy`, Lightning's ``ModelParallelStrategy`` without tensor
  parallelism) shards in the module's ``configure_model`` with :func:`shard_fully`;
  :func:`unsharded_for_generation` keeps the gathered parameters for the whole rollout instead of gathering them again at every decode step.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from .sharded_checkpoint import (
    check_entries,
    has_frozen_parameters,
    is_sharded,
    load_adapted,
)


def layer_classes(model: nn.Module, names: Sequence[str] | None) -> tuple[type[nn.Module], ...]:
    """The module classes called ``names`` inside ``model`` (default: the model's
    ``_no_split_modules``, its decoder-layer classes in Hugging Face models)."""
    wanted = set(names if names is not None else getattr(model, "_no_split_modules", None) or [])
    found = {type(module) for module in model.modules() if type(module).__name__ in wanted}
    missing = wanted - {cls.__name__ for cls in found}
    if missing or not found:
        present = sorted({type(module).__name__ for module in model.modules() if "Layer" in type(module).__name__ or "Block" in type(module).__name__})
        raise ValueError(
            f"model.memory.shard_layer_classes={sorted(wanted)}: the model has no module of class {sorted(missing or wanted)}; "
            f"name its decoder-layer class instead (layer-like classes in this model: {present})."
        )
    return tuple(found)


def fsdp1_wrap_policy(strategy: Any, model: nn.Module, names: Sequence[str] | None) -> Any:
    """FSDP1 (Lightning's ``FSDPStrategy``): the strategy's ``auto_wrap_policy``, first set, if
    it has none, to wrap every module of :func:`layer_classes` (``names``, default ``model``'s
    decoder layers) as its own FSDP unit; None for other strategies.

    The strategy wraps the whole LightningModule with this policy after ``configure_model``, so
    the root FSDP unit (embeddings, final norm, LM head) stays gathered around the whole training
    step, as the rollout and the loss use those outside ``forward``. Wrapping the layers in
    ``configure_model`` instead would make Lightning leave the root unwrapped: those parameters
    would be neither sharded nor have their gradients averaged."""
    if not isinstance(strategy, FSDPStrategy):
        return None
    if strategy.kwargs.get("auto_wrap_policy") is None:
        strategy.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(layer_classes(model, names))
    return strategy.kwargs["auto_wrap_policy"]


def shard_fully(model: nn.Module, mesh, classes: tuple[type[nn.Module], ...]) -> None:
    """FSDP2: shard every module of ``classes``, then the rest of ``model``, over ``mesh``."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, classes):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _fsdp2_modules(model: nn.Module) -> list[nn.Module]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return []
    return [module for module in model.modules() if isinstance(module, FSDPModule)]


def register_forward_method(model: nn.Module, name: str, function: Callable[..., Any]) -> None:
    """Attach ``function(model, ...)`` to an FSDP2 model as method ``name`` that gathers and
    reshards parameters (and syncs gradients) like ``forward``: for computations, such as the
    loss's chunked vocabulary projection, that use the model's parts outside its ``forward``."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    setattr(model, name, types.MethodType(function, model))
    register_fsdp_forward_method(model, name)


@contextmanager
def unsharded_for_generation(model: nn.Module) -> Iterator[None]:
    """Gather an FSDP2 model's parameters for the whole rollout (a no-op for other models): the
    rollout embeds its inputs outside ``forward`` and should not gather again at every step."""
    sharded = _fsdp2_modules(model)
    for module in sharded:
        module.set_reshard_after_forward(False)
        module.unshard()
    try:
        yield
    finally:
        for module in sharded:
            module.reshard()
            module.set_reshard_after_forward(True)


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP2: every process in one data-parallel
    dimension (no tensor parallelism), so ``data_parallel_size`` need not be spelled out; the
    module shards itself in ``configure_model``."""

    def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None, timeout: timedelta = default_pg_timeout):
        super().__init__(
            data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend, timeout=timeout,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's loading, except that a checkpoint of an adapted policy holds the adapters
        alone (:mod:`motg_lightning.lightning.sharded_checkpoint`)."""
        path = Path(self.broadcast(checkpoint_path))
        adapted = has_frozen_parameters(self.model)
        if is_sharded(path):
            check_entries(path, self.model)
            if adapted:
                return load_adapted(path, self.model, self.optimizers, weights_only)
            return super().load_checkpoint(path, weights_only)
        module, strict = self.lightning_module, self.lightning_module.strict_loading
        module.strict_loading = strict and not adapted  # a single file of adapter entries: the base stays as loaded
        try:
            return super().load_checkpoint(path, weights_only)
        finally:
            module.strict_loading = strict

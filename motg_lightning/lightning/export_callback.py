"""``ExportOnFitEnd``: write the trained policy as a Hugging Face folder when ``fit`` ends.

In YAML::

    trainer:
      callbacks:
        - class_path: motg_lightning.lightning.export_callback.ExportOnFitEnd
          init_args: {dirpath: runs/exported}

Under a sharded strategy (FSDP1, FSDP2) every process takes part in gathering the whole state
dict on rank 0, which alone writes the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from ..adapters import is_adapted
from ..export import check_dtype, export_trained, policy_weights
from ..models import DType


def _full_state_dict(trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
    """The module's whole state dict on rank 0 (empty on the others under a sharded strategy);
    with adapters, the frozen base is not gathered (the export loads it from its source)."""
    if not isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy)):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # a collective: every rank calls it; with cpu_offload only rank 0 receives the tensors
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=is_adapted(module.policy))
    return get_model_state_dict(trainer.strategy.model, options=options)


class ExportOnFitEnd(L.Callback):
    """Export the trained policy of ``MoTGRPOModule`` as a Hugging Face folder at the end of ``fit``.

    Args:
        dirpath: the folder to write (safetensors weights, config, generation config, tokenizer).
        dtype: the dtype of the written weights ("float32", "bfloat16", "float16"); default: as trained.
        adapter_only: with adapters (`model.peft`), write the adapter alone instead of the merged model.
    """

    def __init__(self, dirpath: str | Path, dtype: DType | None = None, adapter_only: bool = False):
        check_dtype(dtype, "ExportOnFitEnd dtype")
        self.dirpath, self.dtype, self.adapter_only = Path(dirpath), dtype, adapter_only

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse ``adapter_only`` without adapters before training, not after it."""
        if self.adapter_only and getattr(pl_module, "lora", None) is None:
            raise ValueError("ExportOnFitEnd adapter_only=true needs adapters: set model.peft, or export the whole "
                             "model (adapter_only: false).")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "policy", None) is None:
            raise ValueError("ExportOnFitEnd: the module has no policy to export (expected MoTGRPOModule).")
        state = _full_state_dict(trainer, pl_module)
        if trainer.is_global_zero:
            export_trained(pl_module.hparams, policy_weights(state), self.dirpath, self.dtype, self.adapter_only,
                           template=pl_module.policy)
        trainer.strategy.barrier("export_on_fit_end")

"""What :class:`~motg_lightning.lightning.module.MoTGRPOModule` adds to a checkpoint and takes
from it: the state a resumed run needs to go on exactly (:class:`ResumeState`), and, with adapters
(``model.peft``), the adapter weights alone instead of the whole model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
from lightning.pytorch.strategies import ModelParallelStrategy

from ..adapters import check_adapter_entries, is_adapted, trainable_entries
from ..collectives import gather_objects
from ..rules.parameters import owns_parameters
from .distributed import FSDP2Strategy
from .resume_state import ResumeState


def check_rule_parameters(saved: Iterable[str], expected: Iterable[str]) -> None:
    """Refuse a checkpoint whose mixture rule trained parameters of its own (HRPO's gate) that the
    configured rule has not, or the other way round, naming ``model.mixture`` (``saved``: the
    checkpoint's entry names; ``expected``: the module's parameter names)."""
    has, wants = any(map(owns_parameters, saved)), any(map(owns_parameters, expected))
    if has != wants:
        raise ValueError(
            "model.mixture: the checkpoint " + ("holds" if has else "holds no") + " parameters of a rule of its own (HRPO's "
            "gate) and the configured rule " + ("has none" if has else "has some") + "; resume with the rule it was "
            "trained with (its hyperparameters say which), or start a new run."
        )


class CheckpointHooks(L.LightningModule):
    """The module's ``on_save_checkpoint`` and ``on_load_checkpoint``. Expects ``policy``,
    ``reference``, ``options``, ``training_random``, ``entropy_bonus``, ``_refill`` and ``_restored``
    of the module.

    With adapters, a checkpoint's ``state_dict`` holds the adapter weights only; the frozen base
    comes from ``model_name_or_path`` again on loading. Under Lightning's own
    ``ModelParallelStrategy``, whose loader reads every entry of the model, it keeps every entry;
    :class:`~motg_lightning.lightning.distributed.FSDP2Strategy` (``configs/strategy/fsdp2.yaml``)
    loads the adapters alone.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refill = self._refill.state_dict() if self._refill is not None else self._restored.refill_prompts
        ResumeState(
            training_rng=gather_objects(self.training_random.state_dict()), refill_prompts=refill,
            # the reference has moved away from the initial weights
            reference=self.reference.state_dict() if self.options.grpo.sync_ref_model else None,
            entropy_bonus=self.entropy_bonus.state_dict() if self.options.grpo.use_adaptive_entropy else None,
        ).save(checkpoint)
        if is_adapted(self.policy) and not self._loads_every_entry():
            checkpoint["state_dict"] = trainable_entries(checkpoint["state_dict"], self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # before any state of the model loads, so its message is the one shown
            self.configure_model()
            check_rule_parameters(checkpoint["state_dict"], [name for name, _ in self.named_parameters()])
        self._restored = ResumeState.load(checkpoint)
        if self._restored.entropy_bonus is not None:
            self.entropy_bonus.load_state_dict(self._restored.entropy_bonus)
        if self._restored.reference is not None:
            self.configure_model()
            self.reference.load_state_dict(self._restored.reference)
        if is_adapted(self.policy) and "state_dict" in checkpoint:
            saved = checkpoint["state_dict"]
            check_adapter_entries(saved, self, where="model.peft")
            # the frozen base as loaded from model_name_or_path, so the whole state loads strictly
            checkpoint["state_dict"] = {**self.state_dict(), **saved}

    def _loads_every_entry(self) -> bool:
        strategy = self.trainer.strategy if self._trainer is not None else None
        return isinstance(strategy, ModelParallelStrategy) and not isinstance(strategy, FSDP2Strategy)

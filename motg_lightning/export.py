"""Export a trained policy as a Hugging Face model folder.

    python -m motg_lightning.export runs/smoke/checkpoints/last.ckpt exported/ [--dtype bfloat16] [--adapter-only]

writes ``model.safetensors``, ``config.json``, ``generation_config.json`` and the tokenizer (with
its chat template) into ``exported/``, which ``AutoModelForCausalLM.from_pretrained("exported")``
loads with the trained policy's weights. The parameters a rule trained with the policy (HRPO's
gate) are not a Hugging Face model's: they are written beside it, to ``mixture_rule.safetensors``,
which ``motg_lightning.rules.parameters.load_rule_parameters(model, rule, "exported")`` puts back
on the loaded model (an adapter-only export holds them in the adapter file, as PEFT
``modules_to_save``: give the base model them with ``attach_rule_parameters`` before
``PeftModel.from_pretrained``). A policy trained with adapters (``model.peft``) is
written with the adapters merged into the base weights, or, with ``--adapter-only``, as the
adapter alone (``adapter_config.json``, ``adapter_model.safetensors``, the tokenizer), which
``peft.PeftModel.from_pretrained(base_model, "exported")`` loads onto the base model. The same from Python: ``export_checkpoint(ckpt, out_dir)``;
at the end of training: the ``ExportOnFitEnd`` callback (motg_lightning.lightning.export_callback).

A checkpoint is read with pickle (its hyperparameters may hold Python objects): export only
checkpoints you trust. The weights keep the dtype they were trained in unless ``dtype`` is given.

The export runs in three steps: read the checkpoint (read_checkpoint), turn the module's
state dict into the causal LM's (policy_weights), write the folder (export_trained).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import torch
from lightning.pytorch.cli import instantiate_class
from transformers import AutoModelForCausalLM

from .adapters import add_adapters, check_adapter_entries, lora_config
from .lightning.sharded_checkpoint import DCP_INDEX, METADATA_FILE, is_sharded
from .models import DType, load_causal_lm, load_tokenizer
from .rules import MixtureRule, attach_rule_parameters
from .rules.parameters import owns_parameters, save_rule_parameters

#: the prefix of the policy's entries in the LightningModule's state dict
POLICY_PREFIX = "policy."
DTYPES: tuple[str, ...] = get_args(DType)


def check_dtype(dtype: str | None, owner: str) -> None:
    """Refuse a ``dtype`` of the written weights that is not one of :data:`DTYPES` (None keeps the training dtype)."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"{owner}={dtype!r}: one of {', '.join(DTYPES)}, or None to keep the training dtype.")


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"checkpoint {str(path)!r}: no such file; give the .ckpt file a training run saved "
        "(ModelCheckpoint's dirpath, by default <default_root_dir>/lightning_logs/version_N/checkpoints/)."
    )


def _read_distributed(path: Path) -> dict[str, Any]:
    """A sharded (FSDP2) checkpoint folder as one checkpoint dict: the shards gathered through
    torch.distributed.checkpoint's converter, and Lightning's ``meta.pt`` beside them."""
    try:
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    except ImportError as error:  # pragma: no cover - torch without distributed checkpoints
        raise ValueError(
            f"checkpoint {str(path)!r} is a sharded (FSDP2) checkpoint folder and this torch cannot convert it; "
            "convert it where torch.distributed.checkpoint is available, or train with "
            "--trainer.strategy.init_args.save_distributed_checkpoint=false to save single files."
        ) from error
    with tempfile.TemporaryDirectory() as folder:
        single = Path(folder) / "checkpoint.pt"
        dcp_to_torch_save(path, single)
        checkpoint = torch.load(single, map_location="cpu", weights_only=False)
    metadata = path / METADATA_FILE
    if metadata.is_file():
        checkpoint.update(torch.load(metadata, map_location="cpu", weights_only=False))
    return checkpoint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint of ``MoTGRPOModule`` as a dict with ``hyper_parameters`` and
    ``state_dict``: a single ``.ckpt`` file, or the folder of shards FSDP2 saves."""
    path = Path(path)
    if path.is_dir():
        if not is_sharded(path):
            raise ValueError(
                f"checkpoint {str(path)!r} is a folder but not a sharded checkpoint (no {DCP_INDEX} file); "
                "give a .ckpt file or the folder of shards an FSDP2 run saved."
            )
        checkpoint = _read_distributed(path)
    elif path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    else:
        raise _missing(path)
    for key in ("hyper_parameters", "state_dict"):
        if key not in checkpoint:
            raise ValueError(f"checkpoint {str(path)!r} has no {key!r}: not a checkpoint of MoTGRPOModule saved by Lightning.")
    return checkpoint


def policy_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The causal LM's own state dict out of the LightningModule's (its ``policy.*`` entries)."""
    weights = {key[len(POLICY_PREFIX):]: value for key, value in state_dict.items() if key.startswith(POLICY_PREFIX)}
    if not weights:
        raise ValueError(f"the state dict holds no {POLICY_PREFIX}* entries: not the state of MoTGRPOModule.")
    return weights


def trained_rule(setting: Any) -> MixtureRule | None:
    """The mixture rule of a checkpoint's hyperparameters: the object, or the ``class_path`` and
    ``init_args`` the command line saves."""
    if setting is None or isinstance(setting, MixtureRule):
        return setting
    if isinstance(setting, Mapping) and "class_path" in setting:
        return instantiate_class((), {**setting, "init_args": setting.get("init_args") or {}})
    raise ValueError(f"model.mixture={setting!r} in the checkpoint's hyperparameters: not a mixture rule.")


def export_policy(
    template: torch.nn.Module, tokenizer: Any, weights: Mapping[str, torch.Tensor], out_dir: str | Path,
    dtype: DType | None = None,
) -> Path:
    """Write ``weights`` as a Hugging Face folder of ``template``'s architecture.

    Args:
        template: a model of the policy's architecture: its config and generation config are
            written; its own parameters are not used (it may be sharded, or hold the initial weights).
        tokenizer: the policy's tokenizer, saved with its chat template.
        weights: the causal LM's full state dict (every tensor whole, on any device).
        out_dir: the folder to write (created if needed; files of an earlier export are replaced).
        dtype: the dtype of the written weights; None keeps each weight's own.
    """
    out_dir = Path(out_dir)
    target = getattr(torch, dtype) if dtype is not None else None
    tensors = {key: value.detach().to("cpu", dtype=target if target is not None and value.is_floating_point() else None)
               for key, value in weights.items()}
    rule_tensors = {key: tensors.pop(key) for key in [key for key in tensors if owns_parameters(key)]}
    with torch.device("meta"):  # the architecture without allocating (or initialising) weights
        model = AutoModelForCausalLM.from_config(copy.deepcopy(template.config))
    model.load_state_dict(tensors, strict=True, assign=True)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = copy.deepcopy(template.generation_config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if rule_tensors:
        save_rule_parameters(rule_tensors, out_dir)
    return out_dir


def export_trained(
    hparams: Mapping[str, Any], weights: Mapping[str, torch.Tensor], out_dir: str | Path, dtype: DType | None = None,
    adapter_only: bool = False, template: torch.nn.Module | None = None,
) -> Path:
    """Write the policy a ``MoTGRPOModule`` with hyperparameters ``hparams`` trained as a Hugging
    Face folder, given its causal LM's ``weights`` (:func:`policy_weights`).

    With adapters (``hparams["peft"]``), ``weights`` need hold only the adapters: the base is
    loaded from ``model_name_or_path`` again, the adapters put on it, then merged into its
    weights, or, with ``adapter_only``, saved alone. ``template`` (a model of the policy's
    architecture, without adapters) saves loading one when there are none."""
    check_dtype(dtype, "dtype")
    name, lora = hparams["model_name_or_path"], lora_config(hparams.get("peft"))
    if adapter_only and lora is None:
        raise ValueError("adapter_only: the policy was trained without model.peft, so it has no adapter to export alone; "
                         "export the whole model (leave --adapter-only out).")
    tokenizer = load_tokenizer(name)
    if template is None or lora is not None:
        # the architecture, config and generation config as training loaded them (the weights are replaced)
        template = load_causal_lm(name, hparams.get("dtype", "float32"))
    if lora is None:  # the rule's own parameters, if any, are among the weights (export_policy writes them apart)
        return export_policy(template, tokenizer, weights, out_dir, dtype)
    rule = trained_rule(hparams.get("mixture"))
    if rule is not None:
        attach_rule_parameters(template, rule)  # HRPO's gate, so that the adapters find it among their modules_to_save
    adapted = add_adapters(template, lora)
    check_adapter_entries(weights, adapted, where="export")
    adapted.load_state_dict(dict(weights), strict=False)
    if adapter_only:
        out_dir = Path(out_dir)
        adapted.peft_config["default"].base_model_name_or_path = name  # what the adapter goes on
        if dtype is not None:
            adapted.to(getattr(torch, dtype))
        adapted.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return out_dir
    merged = adapted.merge_and_unload()
    return export_policy(merged, tokenizer, merged.state_dict(), out_dir, dtype)


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, dtype: DType | None = None, adapter_only: bool = False,
) -> Path:
    """Export the policy of a ``MoTGRPOModule`` checkpoint as a Hugging Face folder.

    Args:
        checkpoint: a ``.ckpt`` file, or the folder of shards an FSDP2 run saved.
        out_dir: the folder to write.
        dtype: the dtype of the written weights ("float32", "bfloat16", "float16"); default: as trained.
        adapter_only: with adapters (``model.peft``), write the adapter alone instead of the merged model.

    Returns the folder written.
    """
    state = read_checkpoint(checkpoint)
    return export_trained(state["hyper_parameters"], policy_weights(state["state_dict"]), out_dir, dtype, adapter_only)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m motg_lightning.export",
        description="Export the trained policy of a MoTGRPOModule checkpoint as a Hugging Face model folder "
        "(safetensors weights, config, generation config, tokenizer with its chat template).",
    )
    parser.add_argument("checkpoint", help="the .ckpt file of a training run, or the folder of shards an FSDP2 run saved")
    parser.add_argument("out_dir", help="the folder to write; AutoModelForCausalLM.from_pretrained(out_dir) loads it")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="dtype of the written weights (default: as trained)")
    parser.add_argument("--adapter-only", action="store_true",
                        help="with adapters (model.peft): write the adapter alone, not the weights merged into the base")
    args = parser.parse_args(argv)
    try:
        folder = export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.adapter_only)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"exported to {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

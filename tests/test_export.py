"""Export of a trained policy as a Hugging Face folder: from a checkpoint (Python and command line,
single file and FSDP2's folder of shards) and at the end of fit (ExportOnFitEnd)."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from test_module import datamodule, trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from motg_lightning.export import export_checkpoint, main
from motg_lightning.lightning.export_callback import ExportOnFitEnd
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
INPUT_IDS = torch.tensor([[1, 17, 400, 23, 9, 2041], [5, 6, 7, 8, 9, 10]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=INPUT_IDS).logits.float()


def _save(module: MoTGRPOModule, path: Path) -> Path:
    run = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    run.strategy.connect(module)
    run.save_checkpoint(path)
    return path


def _perturbed(dtype: str = "float32") -> MoTGRPOModule:
    """A tiny module whose weights differ from the fresh random initialisation."""
    module = MoTGRPOModule(TINY_MODEL, dtype=dtype, grpo=GRPOOptions(num_generations=2, beta=0))
    module.configure_model()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.policy.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator).to(parameter.dtype))
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    module = _perturbed()
    return module, _save(module, tmp_path_factory.mktemp("ckpt") / "trained.ckpt")


def _assert_exported(out: Path, policy: torch.nn.Module, dtype=torch.float32) -> None:
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == dtype
    torch.testing.assert_close(model.state_dict(), policy.state_dict(), rtol=0, atol=0)
    if dtype == torch.float32:  # a random model cast whole to bfloat16 rounds its rotary buffer too, unlike from_pretrained
        torch.testing.assert_close(_logits(model), _logits(policy))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False,
                                                                   add_generation_prompt=True)


def test_exported_folder_gives_the_trained_policys_logits(trained, tmp_path):
    module, checkpoint = trained
    fresh = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0))
    fresh.configure_model()
    assert not torch.allclose(_logits(fresh.policy), _logits(module.policy)), "the test needs trained weights"
    out = export_checkpoint(checkpoint, tmp_path / "hf")
    _assert_exported(out, module.policy)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_command_line_export_with_a_dtype(trained, tmp_path):
    module, checkpoint = trained
    done = subprocess.run([sys.executable, "-m", "motg_lightning.export", str(checkpoint), str(tmp_path / "hf"), "--dtype", "bfloat16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert model.dtype == torch.bfloat16
    # the weights, cast (comparing logits would compare the rotary buffers, which casting the whole model rounds too)
    expected = {key: value.to(torch.bfloat16) for key, value in module.policy.state_dict().items()}
    torch.testing.assert_close(model.state_dict(), expected, rtol=0, atol=0)


def test_weights_keep_the_training_dtype(tmp_path):
    module = _perturbed("bfloat16")
    out = export_checkpoint(_save(module, tmp_path / "bf16.ckpt"), tmp_path / "hf")
    _assert_exported(out, module.policy, dtype=torch.bfloat16)


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt.*no such file; give the .ckpt file"):
        export_checkpoint(missing, tmp_path / "hf")
    with pytest.raises(SystemExit) as exit:
        main([str(missing), str(tmp_path / "hf")])
    assert exit.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {str(missing)!r}: no such file")
    with pytest.raises(ValueError, match="not a sharded checkpoint"):
        export_checkpoint(tmp_path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_callback_exports_the_policy_at_the_end_of_fit(tmp_path):
    L.seed_everything(0)
    module = MoTGRPOModule(TINY_MODEL, rollout=RolloutOptions(max_new_tokens=6, thinking_budget=2),
                           grpo=GRPOOptions(num_generations=2, beta=0), optimizer=lambda p: torch.optim.SGD(p, lr=10.0))
    run = trainer(callbacks=[ExportOnFitEnd(dirpath=tmp_path / "hf")])
    run.fit(module, datamodule())
    assert run.global_step == 1
    _assert_exported(tmp_path / "hf", module.policy)


def test_fsdp2_run_exports_at_fit_end_and_from_its_folder_of_shards(tmp_path):
    """One CPU process under FSDP2: the callback gathers the sharded policy, and the distributed
    checkpoint folder the run saves exports to the same weights."""
    command = [
        sys.executable, "main.py", "fit", "--config", "configs/smoke.yaml", "--config", "configs/strategy/fsdp2.yaml",
        "--trainer.accelerator=cpu", "--trainer.precision=32-true", "--trainer.devices=1", "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
        "--model.grpo.beta=0", "--trainer.callbacks+=motg_lightning.lightning.export_callback.ExportOnFitEnd",
        f"--trainer.callbacks.dirpath={tmp_path / 'at_end'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = next(tmp_path.rglob("*.ckpt"))
    assert shards.is_dir(), "a distributed checkpoint: one folder of shards"
    at_end = AutoModelForCausalLM.from_pretrained(tmp_path / "at_end")
    from_shards = AutoModelForCausalLM.from_pretrained(export_checkpoint(shards, tmp_path / "from_shards"))
    torch.testing.assert_close(_logits(from_shards), _logits(at_end))
    initial = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0))
    initial.configure_model()
    assert not torch.allclose(_logits(at_end), _logits(initial.policy)), "the exported weights are the trained ones"

"""LoRA adapters (model.peft): the reference is the base with adapters disabled, every rule trains
through the adapted model, checkpoints hold the adapters alone, export merges or keeps them apart."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from test_likelihood import RULES
from test_module import datamodule, trainer
from transformers import AutoModelForCausalLM

from motg_lightning.adapters import LoraOptions, add_adapters, lora_config
from motg_lightning.export import export_checkpoint
from motg_lightning.lightning.export_callback import ExportOnFitEnd
from motg_lightning.grpo.likelihood import trajectory_log_likelihood
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL, load_causal_lm
from motg_lightning.rollout.generate import generate
from motg_lightning.rules import attach_rule_parameters

ROOT = Path(__file__).resolve().parents[1]
LORA = LoraOptions(r=4, lora_alpha=8)


def _adapted_module(beta=0.1, **options) -> MoTGRPOModule:
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2, beta=beta), peft=LORA,
                           rollout=RolloutOptions(max_new_tokens=8, thinking_budget=3), **options)
    module.configure_model()
    return module


def _perturb_adapters(model: torch.nn.Module) -> None:
    """LoRA starts as the identity (B = 0); move every adapter weight so the policy differs from the base."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))


def _adapter_weights(module: MoTGRPOModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.policy.named_parameters() if p.requires_grad}


def test_only_the_adapters_train_and_no_reference_copy_is_made():
    module = _adapted_module()
    trainable = [name for name, p in module.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert module.reference is None, "the reference is the policy with adapters disabled, not a copy"
    linear = {name.rsplit(".", 1)[-1] for name, m in module.policy.named_modules() if hasattr(m, "lora_A")}
    assert linear == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, "all-linear: the decoder's"


def test_the_reference_is_the_base_model_with_adapters_disabled(prompts, make_settings):
    module = _adapted_module()
    _perturb_adapters(module.policy)
    torch.manual_seed(0)
    rollout = generate(module.policy, module.mixture, *prompts, make_settings(max_new_tokens=10, thinking_budget=3))
    fixed = module.fixed_likelihoods(rollout)
    base = load_causal_lm(TINY_MODEL).train()  # the same random initialisation, never adapted
    with torch.no_grad():
        expected = trajectory_log_likelihood(base, module.mixture, rollout, chunk_size=16)
        adapted = trajectory_log_likelihood(module.policy, module.mixture, rollout, chunk_size=16)
    mask = rollout.completion_mask
    torch.testing.assert_close(fixed.reference[mask], expected[mask])
    assert not torch.allclose(adapted[mask], expected[mask]), "with adapters enabled the policy differs"
    assert all(layer.disable_adapters is False for layer in module.policy.modules() if hasattr(layer, "lora_A")), "re-enabled"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{type(r).__name__}-{r.likelihood}")
def test_every_rule_rolls_out_and_trains_through_the_adapted_model(rule, prompts, make_settings):
    base = load_causal_lm(TINY_MODEL)
    gate = attach_rule_parameters(base, rule)  # HRPO's, trained whole beside the adapters; None for the others
    policy = add_adapters(base, lora_config(LORA)).train()
    _perturb_adapters(policy)
    torch.manual_seed(0)
    rollout = generate(policy, rule, *prompts, make_settings(max_new_tokens=10, thinking_budget=3))
    recomputed = trajectory_log_likelihood(policy, rule, rollout, chunk_size=4)
    mask = rollout.completion_mask
    torch.testing.assert_close(recomputed[mask], rollout.log_likelihood[mask], atol=1e-4, rtol=1e-4)
    recomputed[rollout.loss_mask].sum().backward()
    grads = {name: p.grad for name, p in policy.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    if gate is not None:
        assert any(g.abs().sum() > 0 for name, g in grads.items() if "mixture_rule.modules_to_save" in name), "the gate trains"


def test_fit_changes_only_the_adapters_and_checkpoints_hold_them_alone(tmp_path):
    module = _adapted_module(optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    base = {name: p.detach().clone() for name, p in module.policy.named_parameters() if not p.requires_grad}
    adapters = _adapter_weights(module)
    run = trainer(max_steps=2)
    run.fit(module, datamodule())
    assert all(torch.equal(p, base[name]) for name, p in module.policy.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, adapters[name]) for name, p in module.policy.named_parameters() if p.requires_grad)
    path = tmp_path / "adapted.ckpt"
    run.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert set(saved["state_dict"]) == {f"policy.{name}" for name in adapters}, "the adapters, not the frozen base"
    assert len(saved["optimizer_states"][0]["state"]) == len(adapters), "AdamW's moments of each adapter weight"
    restored = MoTGRPOModule.load_from_checkpoint(path)
    assert restored.hparams["peft"]["r"] == LORA.r and restored.reference is None
    for name, value in _adapter_weights(restored).items():
        torch.testing.assert_close(value, dict(module.policy.named_parameters())[name].detach())


def test_a_run_resumes_from_an_adapter_checkpoint(tmp_path):
    module = _adapted_module()
    first = trainer(max_steps=1, default_root_dir=tmp_path)
    first.fit(module, datamodule())
    first.save_checkpoint(tmp_path / "step1.ckpt")
    resumed = _adapted_module()
    second = trainer(max_steps=2, default_root_dir=tmp_path)
    second.fit(resumed, datamodule(), ckpt_path=tmp_path / "step1.ckpt")
    assert second.global_step == 2
    full = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    full.configure_model()
    with pytest.raises(ValueError, match=r"^model.peft: the checkpoint has no weights for .* adapter parameters"):
        _adapted_module().on_load_checkpoint({"state_dict": full.state_dict()})


def test_export_merges_the_adapters_or_writes_them_alone(tmp_path):
    module = _adapted_module()
    _perturb_adapters(module.policy)
    run = trainer(max_steps=0)
    run.strategy.connect(module)
    run.save_checkpoint(tmp_path / "adapted.ckpt")
    ids = torch.tensor([[1, 17, 400, 23, 9, 2041]])
    with torch.no_grad():
        expected = module.policy.eval()(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(export_checkpoint(tmp_path / "adapted.ckpt", tmp_path / "merged")).eval()
    assert not any("lora" in name for name in merged.state_dict())
    adapter = export_checkpoint(tmp_path / "adapted.ckpt", tmp_path / "adapter", adapter_only=True)
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(load_causal_lm(TINY_MODEL), adapter).eval()
    halved = export_checkpoint(tmp_path / "adapted.ckpt", tmp_path / "adapter16", dtype="bfloat16", adapter_only=True)
    assert {value.dtype for value in load_file(halved / "adapter_model.safetensors").values()} == {torch.bfloat16}
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_export_of_a_model_without_adapters_refuses_adapter_only(tmp_path):
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    module.configure_model()
    run = trainer(max_steps=0)
    run.strategy.connect(module)
    run.save_checkpoint(tmp_path / "full.ckpt")
    with pytest.raises(ValueError, match="^adapter_only: the policy was trained without model.peft"):
        export_checkpoint(tmp_path / "full.ckpt", tmp_path / "out", adapter_only=True)
    at_the_end = trainer(max_steps=1, callbacks=[ExportOnFitEnd(tmp_path / "never", adapter_only=True)])
    with pytest.raises(ValueError, match="^ExportOnFitEnd adapter_only=true needs adapters"):
        at_the_end.fit(MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2)), datamodule())
    assert at_the_end.global_step == 0, "refused before the first step"


def test_impossible_combinations_are_refused_naming_the_fields():
    with pytest.raises(ValueError, match=r"^model.peft.r=0"):
        MoTGRPOModule(TINY_MODEL, peft=LoraOptions(r=0))
    with pytest.raises(ValueError, match=r"^model.peft.lora_dropout=1"):
        MoTGRPOModule(TINY_MODEL, peft=LoraOptions(lora_dropout=1.0))
    synced = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2, beta=0.1, sync_ref_model=True), peft=LORA)
    with pytest.raises(ValueError, match=r"^model.grpo.sync_ref_model=true with model.peft"):
        synced.configure_model()
    sharded = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2), peft=LORA)
    sharded.trainer = SimpleNamespace(strategy=FSDPStrategy())  # a Trainer with FSDPStrategy refuses a CPU
    with pytest.raises(ValueError, match=r"^model.peft with trainer.strategy=FSDPStrategy \(FSDP1\).*fsdp2.yaml"):
        sharded.configure_model()
    embedding = MoTGRPOModule(TINY_MODEL, peft=LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]))
    with pytest.raises(ValueError, match=r"^model.peft.target_modules=.*adapts the input embedding"):
        embedding.configure_model()


def test_a_whole_lora_config_is_accepted_and_kept_in_the_hyperparameters():
    module = MoTGRPOModule(TINY_MODEL, peft=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    assert module.hparams["peft"]["class_path"] == "peft.LoraConfig", "as the command line takes it, for --ckpt_path"
    config = lora_config(module.hparams["peft"])
    assert isinstance(config, LoraConfig) and config.r == 2 and set(config.target_modules) == {"q_proj", "v_proj"}


def test_the_lora_overlay_and_the_short_form_parse_from_the_command_line():
    for flags in (["--config", "configs/peft/lora.yaml"], ["--model.peft.r=8"],
                  ["--model.peft", '{"class_path": "peft.LoraConfig", "init_args": {"r": 4, "target_modules": "all-linear"}}']):
        done = subprocess.run([sys.executable, "main.py", "fit", "--config", "configs/smoke.yaml", *flags, "--print_config"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "peft:" in done.stdout and "lora_alpha" in done.stdout

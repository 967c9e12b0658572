"""Two CPU processes (gloo) under Lightning's DDP: both train, groups stay whole, results reduce."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from ddp_probe import probe_environment, read_ranks
from motg_lightning.collectives import finished_everywhere, max_over_ranks, world_size
from motg_lightning.lightning.distributed import layer_classes
from motg_lightning.models import TINY_MODEL, load_causal_lm
from motg_lightning.lightning.options import GRPOOptions

ROOT = Path(__file__).resolve().parents[1]


def _fit_on_cpu_processes(tmp_path, *extra, devices=2, strategy=("--trainer.strategy=ddp",)):
    """``main.py fit`` on ``devices`` CPU processes (gloo); each rank's probe record."""
    for old in tmp_path.glob("rank_*.json"):
        old.unlink()
    command = [
        sys.executable, "main.py", "fit", "--config", "configs/smoke.yaml", *strategy, "--trainer.accelerator=cpu",
        "--trainer.precision=32-true", f"--trainer.devices={devices}", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=ddp_probe.RankProbe", "--trainer.limit_val_batches=0", *extra,
    ]
    done = subprocess.run(command, cwd=ROOT, env=probe_environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_ranks(tmp_path, devices)


def test_ddp_fit_on_two_cpu_processes(tmp_path):
    ranks = _fit_on_cpu_processes(tmp_path, "--trainer.max_steps=3")
    group_size, prompts_per_rank = 2, 2  # configs/smoke.yaml
    for rank in ranks:
        assert rank["world_size"] == 2 and len(rank["steps"]) == 3
        # every prompt of the rank's batch is rolled out G times on that rank: groups never split
        assert all(step["local_rows"] == prompts_per_rank * group_size for step in rank["steps"])
    for first, second in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert first["questions"] != second["questions"], "each rank gets its own prompts"
        expected = (first["local_reward"] + second["local_reward"]) / 2
        assert first["logged_reward"] == pytest.approx(expected, abs=1e-6)
        assert second["logged_reward"] == pytest.approx(expected, abs=1e-6)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9), "gradients are averaged: weights agree"


def test_ddp_with_dynamic_sampling_keeps_the_ranks_in_step(tmp_path):
    """Ranks may need different numbers of extra rollouts and micro-batches; none may hang."""
    ranks = _fit_on_cpu_processes(tmp_path, "--trainer.max_steps=2", "--model.grpo.dynamic_sampling=true", "--model.grpo.max_sampling_rounds=3")
    assert all(len(rank["steps"]) == 2 for rank in ranks)


def test_batch_statistics_are_taken_over_every_rank(tmp_path):
    """As TRL, ``scale_rewards=batch`` divides by the std of every process's rewards and the
    ``top_entropy_quantile`` threshold is the quantile of every process's counted steps."""
    ranks = _fit_on_cpu_processes(tmp_path, "--trainer.max_steps=2", "--model.reward=ddp_probe.RewardByLength",
                                  "--model.grpo.scale_rewards=batch", "--model.grpo.top_entropy_quantile=0.5")
    group_size = 2  # configs/smoke.yaml
    for steps in zip(ranks[0]["steps"], ranks[1]["steps"]):
        rewards = torch.tensor([reward for step in steps for reward in step["rewards"]])
        threshold = torch.quantile(torch.tensor([value for step in steps for value in step["counted_entropy"]]), 0.5)
        assert rewards.std() > 0
        for step in steps:
            mine = torch.tensor(step["rewards"]).reshape(-1, group_size)
            centred = (mine - mine.mean(-1, keepdim=True)).reshape(-1)
            torch.testing.assert_close(torch.tensor(step["advantages"]), centred / (rewards.std() + 1e-4))
            assert step["policy_steps"] == int((torch.tensor(step["counted_entropy"]) >= threshold).sum())


FSDP2 = ("--config", "configs/strategy/fsdp2.yaml")


def test_fsdp2_shards_policy_and_reference_and_resumes_on_fewer_devices(tmp_path):
    """Training, validation (rollouts with the sharded model) and a distributed checkpoint.
    (Lightning's FSDP1 strategy needs CUDA; FSDP2 runs on CPU processes too.)"""
    ranks = _fit_on_cpu_processes(tmp_path, "--trainer.max_steps=2", "--model.grpo.beta=0.1", "--trainer.limit_val_batches=1", strategy=FSDP2)
    assert all(len(rank["steps"]) == 2 and rank["world_size"] == 2 for rank in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    assert checkpoint.is_dir(), "a distributed checkpoint: one folder of shards"
    resumed = _fit_on_cpu_processes(tmp_path, "--trainer.max_steps=3", "--model.grpo.beta=0.1", f"--ckpt_path={checkpoint}",
                                    devices=1, strategy=FSDP2)
    assert len(resumed[0]["steps"]) == 1, "the run goes on from step 2"


def test_lora_trains_under_ddp_and_fsdp2_and_fsdp2_resumes(tmp_path):
    """Adapters on two processes: under DDP their gradients are averaged; under FSDP2 the adapted
    layers are sharded, the reference is the base with adapters disabled, and the run resumes."""
    lora = ("--model.peft.r=4", "--model.grpo.beta=0.1")
    ranks = _fit_on_cpu_processes(tmp_path / "ddp", "--trainer.max_steps=2", *lora)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    ranks = _fit_on_cpu_processes(tmp_path / "fsdp2", "--trainer.max_steps=2", *lora, strategy=FSDP2)
    assert all(len(rank["steps"]) == 2 for rank in ranks) and ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    checkpoint = next((tmp_path / "fsdp2").rglob("*.ckpt"))
    saved = FileSystemReader(checkpoint).read_metadata().state_dict_metadata
    weights = [key for key in saved if key.startswith("state_dict.")]
    assert weights and all("lora_" in key for key in weights), "the shards hold the adapters, not the frozen base"
    resumed = _fit_on_cpu_processes(tmp_path / "fsdp2", "--trainer.max_steps=3", *lora, f"--ckpt_path={checkpoint}",
                                    devices=1, strategy=FSDP2)
    assert len(resumed[0]["steps"]) == 1
    without = subprocess.run([sys.executable, "main.py", "validate", "--config", "configs/smoke.yaml", *FSDP2,
                              "--trainer.accelerator=cpu", "--trainer.devices=1", f"--ckpt_path={checkpoint}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert without.returncode != 0 and "saved with another model.peft setting" in without.stderr


def test_helpers_are_local_without_a_process_group():
    assert world_size() == 1
    assert max_over_ranks(3) == 3
    assert finished_everywhere(torch.tensor([True, True])) and not finished_everywhere(torch.tensor([True, False]))


def test_shard_layers_default_to_the_decoder_layers_and_wrong_names_are_refused():
    model = load_causal_lm(TINY_MODEL)
    assert [cls.__name__ for cls in layer_classes(model, None)] == ["LlamaDecoderLayer"]
    with pytest.raises(ValueError, match="shard_layer_classes"):
        layer_classes(model, ["QwenBlock"])


def _wrap_units(policy, root) -> list[torch.nn.Module]:
    """The modules of ``root`` that the FSDP1 wrap policy makes FSDP units of their own."""
    return [module for module in root.modules() if policy(module, recurse=False, nonwrapped_numel=0)]


def test_fsdp1_wraps_the_decoder_layers_and_refuses_a_reference_model():
    """What the module hands Lightning's FSDPStrategy, which wraps the LightningModule with its
    ``auto_wrap_policy`` after ``configure_model``: the policy's decoder layers (fsdp.yaml names
    no layer class). A reference model (beta != 0) would be an FSDP1 root of its own, sharded
    outside its forward where the loss uses its embedding: refused before any model is loaded."""
    from types import SimpleNamespace

    import yaml
    from lightning.pytorch.strategies import FSDPStrategy

    from motg_lightning.lightning.module import MoTGRPOModule

    overlay = yaml.safe_load((ROOT / "configs" / "strategy" / "fsdp.yaml").read_text())["trainer"]["strategy"]
    strategy = FSDPStrategy(**overlay["init_args"])
    assert "auto_wrap_policy" not in strategy.kwargs
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2))
    module.trainer = SimpleNamespace(strategy=strategy)  # a Trainer with FSDPStrategy refuses a CPU
    module.configure_model()
    policy = strategy.kwargs["auto_wrap_policy"]
    assert _wrap_units(policy, module) == list(module.policy.model.layers)  # what Lightning will wrap

    with_reference = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2, beta=0.1))
    with_reference.trainer = SimpleNamespace(strategy=FSDPStrategy(**overlay["init_args"]))
    with pytest.raises(ValueError, match=r"^model.grpo.beta=0.1 with trainer.strategy=FSDPStrategy \(FSDP1\).*fsdp2.yaml"):
        with_reference.configure_model()
    assert with_reference.policy is None


def test_fsdp1_finds_the_decoder_layers_of_qwen2():
    """The paper's Qwen2.5: its layers are not LlamaDecoderLayer, and are found all the same."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from motg_lightning.lightning.distributed import fsdp1_wrap_policy

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1)
    model = Qwen2ForCausalLM(config)
    assert not any(isinstance(layer, LlamaDecoderLayer) for layer in model.model.layers)
    assert [cls.__name__ for cls in layer_classes(model, None)] == ["Qwen2DecoderLayer"]
    policy = fsdp1_wrap_policy(FSDPStrategy(), model, None)
    assert _wrap_units(policy, model) == list(model.model.layers)
    assert fsdp1_wrap_policy(None, model, None) is None, "other strategies get no policy"
    own = FSDPStrategy(auto_wrap_policy={torch.nn.Embedding})
    assert _wrap_units(fsdp1_wrap_policy(own, model, None), model) == [model.model.embed_tokens], "a policy set on the strategy wins"


def test_padding_micro_batches_for_other_ranks_changes_nothing():
    """The extra micro-batches a rank runs to match the busiest rank carry no weight."""
    import lightning as L

    from motg_lightning.grpo.micro_batches import MicroBatch
    from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec
    from motg_lightning.lightning.module import MoTGRPOModule
    from motg_lightning.lightning.options import MemoryOptions, RolloutOptions
    from motg_lightning.rewards import RewardFunction

    class RewardByLength(RewardFunction):
        """Rewards that vary within groups, so the update moves the weights."""

        def __call__(self, completions, entries):
            output = super().__call__(completions, entries)
            output.total = torch.tensor([float(len(text)) for text in completions])
            return output

    class PaddedForABusierRank(MoTGRPOModule):
        """Runs two padding micro-batches more, as a rank does whose rollouts need fewer than another's."""

        def micro_batches(self, rollout):
            return super().micro_batches(rollout) + [MicroBatch(slice(0, 1), counted=False)] * 2

    def trained(module_class):
        L.seed_everything(0)
        module = module_class(TINY_MODEL, reward=RewardByLength(), rollout=RolloutOptions(max_new_tokens=12, thinking_budget=4),
                              grpo=GRPOOptions(num_generations=2, beta=0.1), memory=MemoryOptions(micro_batch_size=2),
                              optimizer=lambda parameters: torch.optim.SGD(parameters, lr=1.0))
        data = ReasoningGymDataModule(tasks=[TaskSpec("basic_arithmetic", config={"max_terms": 2, "max_digits": 1})],
                                      tokenizer=TINY_MODEL, train_size=8, val_size=4, test_size=4, batch_size=2)
        L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  limit_val_batches=0, enable_model_summary=False).fit(module, data)
        return {name: value.detach().clone() for name, value in module.policy.named_parameters()}

    L.seed_everything(0)
    untrained = MoTGRPOModule(TINY_MODEL)
    untrained.configure_model()
    plain = trained(MoTGRPOModule)
    padded = trained(PaddedForABusierRank)
    assert any(not torch.equal(value, plain[name]) for name, value in untrained.policy.named_parameters()), "the update moved"
    for name, value in plain.items():
        torch.testing.assert_close(padded[name], value, msg=name)

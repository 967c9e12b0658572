import tempfile

import lightning as L
import pytest
import torch

from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec
from motg_lightning.rules.paper import Sampled
from motg_lightning.models import TINY_MODEL
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.rewards.scoring import RewardFunction
from motg_lightning.lightning.options import EvaluationOptions, GRPOOptions, MemoryOptions, RolloutOptions
from motg_lightning.lightning.resume_state import CHECKPOINT_KEY

REQUIRED_METRICS = [
    "train/reward", "train/reward_std", "train/rewards/correctness/mean", "train/rewards/format/std", "train/accuracy",
    "train/completion_length/mean", "train/truncated_fraction", "train/zero_variance_groups", "train/kl",
    "train/clip_fraction", "train/entropy", "train/mixture_weight_entropy", "train/rollout_tokens_per_s",
    "train/rollout_seconds", "train/update_seconds",
    "train/reward_errors", "train/grad_norm", "train/loss",
]


class RewardByLength(RewardFunction):
    """Rewards that differ within groups even for a random model's text."""

    def __call__(self, completions, entries):
        output = super().__call__(completions, entries)
        output.total = torch.tensor([float(len(text)) for text in completions])
        return output


def datamodule(**kwargs):
    options = dict(train_size=8, val_size=4, test_size=4, batch_size=2, eval_batch_size=4)
    return ReasoningGymDataModule(
        tasks=[TaskSpec("basic_arithmetic", config={"max_terms": 2, "max_digits": 1})], tokenizer=TINY_MODEL,
        **{**options, **kwargs},
    )


def trainer(**kwargs):
    options = dict(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False,
                   default_root_dir=tempfile.mkdtemp(prefix="motg-test-"))  # where completions.jsonl goes without a logger
    return L.Trainer(**{**options, **kwargs})


def test_a_training_step_updates_the_policy_and_logs_every_metric():
    L.seed_everything(0)
    module = MoTGRPOModule(
        TINY_MODEL, mixture=Sampled(k=2, likelihood="weighted"), reward=RewardByLength(),
        rollout=RolloutOptions(max_new_tokens=8, thinking_budget=3), grpo=GRPOOptions(num_generations=4, beta=0.1, num_iterations=2),
        memory=MemoryOptions(micro_batch_size=3), optimizer=lambda p: torch.optim.SGD(p, lr=10.0),
    )
    module.configure_model()
    before = [p.detach().clone() for p in module.policy.parameters()]
    run = trainer(max_steps=2)
    run.fit(module, datamodule())
    assert run.global_step == 2, "num_iterations=2 makes two optimizer steps per rollout"
    assert any(not torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))
    missing = [name for name in REQUIRED_METRICS if name not in run.callback_metrics]
    assert not missing
    assert run.callback_metrics["train/kl"] > 0, "the second optimizer step starts away from the reference"
    assert run.callback_metrics["train/zero_variance_groups"] < 1


def test_reference_model_is_frozen_and_not_checkpointed():
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0.1))
    module.configure_model()
    assert module.reference is not None and not any(p.requires_grad for p in module.reference.parameters())
    assert not any(key.startswith("reference") or "_frozen" in key for key in module.state_dict())
    without_kl = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0.0))
    without_kl.configure_model()
    assert without_kl.reference is None, "no reference model is loaded when beta is 0"


def test_validation_reports_every_metric_per_task_and_overall():
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2), rollout=RolloutOptions(max_new_tokens=4),
                           evaluation=EvaluationOptions(samples=3, decoding="greedy"))
    results = trainer(limit_val_batches=1).validate(module, datamodule())[0]
    for name in ("accuracy", "mean@3", "pass@3", "format_rate", "completion_length"):
        assert f"val/{name}" in results and f"val/{name}/basic_arithmetic" in results
    assert results["val/mean@3"] == results["val/accuracy"], "greedy samples are identical"
    assert 0 < results["val/completion_length"] <= 4


@pytest.mark.parametrize("group, field, value", [
    (GRPOOptions, "num_generations", 1), (MemoryOptions, "micro_batch_size", 0), (RolloutOptions, "max_new_tokens", 0),
    (GRPOOptions, "top_entropy_quantile", 0.0),
    (GRPOOptions, "ref_model_mixup_alpha", 1.5),
    (GRPOOptions, "epsilon", 1.5),
    (GRPOOptions, "epsilon", 0),
    (GRPOOptions, "beta", -0.1),
    (GRPOOptions, "max_nonfinite_updates", 0),
])
def test_invalid_settings_name_the_field(group, field, value):
    name = {GRPOOptions: "grpo", MemoryOptions: "memory", RolloutOptions: "rollout"}[group]
    with pytest.raises(ValueError, match=f"model.{name}.{field}={value}"):
        group(**{field: value})


def test_sync_without_a_reference_model_is_rejected():
    with pytest.raises(ValueError, match="model.grpo.sync_ref_model=true needs a reference model: set model.grpo.beta"):
        MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0.0, sync_ref_model=True))


def test_reference_follows_the_policy_when_synced_and_is_checkpointed(tmp_path):
    L.seed_everything(0)
    module = MoTGRPOModule(
        TINY_MODEL, reward=RewardByLength(), rollout=RolloutOptions(max_new_tokens=6),
        grpo=GRPOOptions(num_generations=4, beta=0.1, sync_ref_model=True, ref_model_sync_steps=2, ref_model_mixup_alpha=1.0,
                         loss_type="grpo", top_entropy_quantile=0.5),
        optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
    )
    module.configure_model()
    initial = [p.detach().clone() for p in module.policy.parameters()]
    run = trainer(max_steps=2, enable_checkpointing=True, default_root_dir=tmp_path)
    run.fit(module, datamodule())
    assert any(not torch.equal(a, b) for a, b in zip(initial, module.policy.parameters()))
    for policy, reference in zip(module.policy.parameters(), module.reference.parameters()):
        assert torch.equal(policy, reference), "alpha=1 at step 2 copies the policy"
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert "reference" in checkpoint[CHECKPOINT_KEY]


def test_forced_answer_must_close_the_thinking_phase():
    with pytest.raises(ValueError, match="model.rollout.forced_answer='\\\\n<answer>' must contain model.rollout.think_end='</think>'"):
        MoTGRPOModule(TINY_MODEL, rollout=RolloutOptions(thinking_budget=4, forced_answer="\n<answer>"))


def test_reference_follows_the_policy_dtype():
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(beta=0.1))
    module.configure_model()
    module.policy.to(torch.bfloat16)  # what a bf16-true precision plugin does to the module's children
    module.place_reference()  # as at the start of fit
    assert next(module.reference.parameters()).dtype == torch.bfloat16


class RewardOnlyForSomeQuestions(RewardFunction):
    """Equal rewards (no variance) for questions whose text has even length, varied otherwise."""

    def __call__(self, completions, entries):
        output = super().__call__(completions, entries)
        output.total = torch.tensor([float(len(c)) if len(e["question"]) % 2 else 1.0 for c, e in zip(completions, entries)])
        return output


class RecordSteps(L.Callback):
    """Each training step's advantages (grouped) and sampling rounds, as the step reports them."""

    def __init__(self):
        self.advantages, self.rounds = [], []

    def on_train_batch_end(self, trainer, module, outputs, *_):
        self.advantages.append(outputs["advantages"].reshape(-1, 2))
        self.rounds.append(float(trainer.callback_metrics["train/sampling_rounds"]))


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_variance():
    L.seed_everything(0)
    module = MoTGRPOModule(TINY_MODEL, reward=RewardOnlyForSomeQuestions(), rollout=RolloutOptions(max_new_tokens=4),
                           grpo=GRPOOptions(num_generations=2, dynamic_sampling=True, max_sampling_rounds=6))
    steps = RecordSteps()
    run = trainer(max_steps=3, callbacks=[steps])
    run.fit(module, datamodule(train_size=16))
    seen = steps.advantages
    assert len(seen) == 3
    for advantages in seen:
        assert advantages.shape[0] == 2, "two prompts per step, as the batch size"
        assert (advantages.abs().sum(-1) > 0).all(), "every kept group has reward variance"
    assert max(steps.rounds) > 1, "some groups had no variance, so extra prompts were rolled out"


class NaNRewardsAfterTwoSteps(RewardFunction):
    """Rewards that vary within groups, then NaN (a broken reward function) from the third step on."""

    poison = False

    def __call__(self, completions, entries):
        output = super().__call__(completions, entries)
        output.total = torch.tensor([float("nan") if self.poison else float(len(text)) for text in completions])
        return output


class PoisonAfterTwoSteps(L.Callback):
    def on_train_batch_start(self, trainer, module, *_):
        module.reward.poison = trainer.global_step >= 2


def test_non_finite_updates_are_skipped_then_the_run_stops_with_its_checkpoint(tmp_path, caplog):
    module = MoTGRPOModule(TINY_MODEL, reward=NaNRewardsAfterTwoSteps(), rollout=RolloutOptions(max_new_tokens=4),
                           grpo=GRPOOptions(num_generations=2, max_nonfinite_updates=3))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    run = trainer(max_steps=20, callbacks=[PoisonAfterTwoSteps(), checkpoint], enable_checkpointing=True)
    with caplog.at_level("WARNING"):
        run.fit(module, datamodule())
    assert run.global_step == 2, "the three poisoned updates were skipped, then the run stopped"
    assert "model.grpo.max_nonfinite_updates=3" in caplog.text
    saved = MoTGRPOModule.load_from_checkpoint(tmp_path / "epoch=0-step=2.ckpt", weights_only=False)  # its reward is this file's
    for name, value in saved.policy.named_parameters():
        assert torch.equal(value, dict(module.policy.named_parameters())[name]), "weights are those of the last finite update"
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())


def test_a_support_larger_than_the_vocabulary_is_refused():
    module = MoTGRPOModule(TINY_MODEL, mixture=Sampled(k=10**6))
    with pytest.raises(ValueError, match="model.mixture.k=1000000: above the model's vocabulary"):
        module.configure_model()


@pytest.mark.parametrize("options, message", [
    ({"rollout": RolloutOptions(max_new_tokens=10**6)}, "model.rollout.max_new_tokens=1000000: .* beyond the model's context"),
    ({"memory": MemoryOptions(micro_batch_tokens=20)}, "model.memory.micro_batch_tokens=20: one sequence .* does not fit"),
])
def test_lengths_that_cannot_train_fail_before_the_first_rollout(options, message):
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2), **options)
    with pytest.raises(ValueError, match=message):
        trainer().fit(module, datamodule())


class RecordingReward(RewardFunction):
    """The default reward, keeping the completions it scored."""

    def __call__(self, completions, entries):
        self.completions = list(completions)
        return super().__call__(completions, entries)


def push_eos(module, amount):
    """Add ``amount`` to the EOS logit wherever the policy computes logits (rollout and loss)."""
    eos = module.tokenizer.eos_token_id

    def hook(layer, inputs, logits):
        logits = logits.clone()
        logits[..., eos] += amount
        return logits

    module.policy.get_output_embeddings().register_forward_hook(hook)


def test_empty_completions_score_zero_and_train_without_error():
    """The model ends every completion at once: empty texts, zero reward, a finite update."""
    module = MoTGRPOModule(TINY_MODEL, reward=RecordingReward(), grpo=GRPOOptions(num_generations=2, beta=0.1),
                           rollout=RolloutOptions(max_new_tokens=6))
    module.configure_model()
    push_eos(module, 1e4)
    run = trainer()
    run.fit(module, datamodule())
    metrics = run.callback_metrics
    assert module.reward.completions == [""] * 4
    assert metrics["train/reward"] == 0 and metrics["train/reward_errors"] == 0
    assert metrics["train/completion_length/max"] == 1 and metrics["train/truncated_fraction"] == 0
    assert metrics["train/zero_variance_groups"] == 1
    for name in ("train/loss", "train/grad_norm", "train/kl", "train/entropy", "train/mixture_weight_entropy"):
        assert torch.isfinite(metrics[name]), name


def test_truncated_completions_can_be_left_out_of_the_loss():
    """Every completion hits max_new_tokens; with mask_truncated_completions (TRL's option) none
    is trained on: the loss and gradient are zero and plain SGD leaves the weights alone."""
    module = MoTGRPOModule(
        TINY_MODEL, reward=RewardByLength(), rollout=RolloutOptions(max_new_tokens=4, stop_strings=[]),
        grpo=GRPOOptions(num_generations=2, mask_truncated_completions=True, beta=0.1), optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
    )
    module.configure_model()
    push_eos(module, -1e4)
    before = [p.detach().clone() for p in module.policy.parameters()]
    run = trainer()
    run.fit(module, datamodule())
    metrics = run.callback_metrics
    assert metrics["train/truncated_fraction"] == 1 and metrics["train/completion_length/min"] == 4
    assert metrics["train/loss"] == 0 and metrics["train/grad_norm"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))


class RecordingQuestions(RewardFunction):
    """The default reward, keeping the questions of every batch it scored (one per group)."""

    def __init__(self, group_size):
        super().__init__()
        self.group_size, self.scored = group_size, []

    def __call__(self, completions, entries):
        self.scored.append([entry["question"] for entry in entries[:: self.group_size]])
        return super().__call__(completions, entries)


def test_dynamic_sampling_resumes_with_the_further_prompts_the_whole_run_drew(tmp_path):
    """Where the extra prompts of dynamic sampling have got to is saved in checkpoints."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(ckpt_path=None):
        # the default reward gives the random model's completions 0: no group varies, so every step draws 2 refills
        reward = RecordingQuestions(group_size=2)
        module = MoTGRPOModule(TINY_MODEL, reward=reward, rollout=RolloutOptions(max_new_tokens=3),
                               grpo=GRPOOptions(num_generations=2, dynamic_sampling=True, max_sampling_rounds=3))
        saving = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
        run = trainer(max_steps=3, enable_checkpointing=True, callbacks=[saving])
        run.fit(module, datamodule(train_size=8), ckpt_path=ckpt_path, weights_only=False)  # its reward is this file's
        return [questions for index, questions in enumerate(reward.scored) if index % 3]  # a step's rounds 2 and 3 refill

    whole = fit()
    assert len(whole) == 6, "three steps, two refills each, across a pass over the four training batches"
    assert fit(ckpt_path=tmp_path / "epoch=0-step=1.ckpt") == whole[2:]


def test_a_resumed_run_that_has_not_refilled_yet_saves_the_refill_position_it_resumed_with():
    module = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2, dynamic_sampling=True))
    position = {"passes": 2, "loader": {"generator": None, "yielded": 3}}
    module.on_load_checkpoint({"refill_prompts": position})
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[CHECKPOINT_KEY]["refill_prompts"] == position

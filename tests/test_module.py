import lightning as L
import pytest
import torch

from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec
from motg_lightning.rules.paper import Sampled
from motg_lightning.models import TINY_MODEL
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.rewards.scoring import RewardFunction

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
                   num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False)
    return L.Trainer(**{**options, **kwargs})


def test_a_training_step_updates_the_policy_and_logs_every_metric():
    L.seed_everything(0)
    module = MoTGRPOModule(
        TINY_MODEL, mixture=Sampled(k=2, likelihood="weighted"), reward=RewardByLength(), num_generations=4, max_new_tokens=8, thinking_budget=3,
        beta=0.1, num_iterations=2, micro_batch_size=3, optimizer=lambda p: torch.optim.SGD(p, lr=10.0),
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
    module = MoTGRPOModule(TINY_MODEL, beta=0.1)
    module.configure_model()
    assert module.reference is not None and not any(p.requires_grad for p in module.reference.parameters())
    assert not any(key.startswith("reference") or "_frozen" in key for key in module.state_dict())
    without_kl = MoTGRPOModule(TINY_MODEL, beta=0.0)
    without_kl.configure_model()
    assert without_kl.reference is None, "no reference model is loaded when beta is 0"


def test_validation_reports_every_metric_per_task_and_overall():
    module = MoTGRPOModule(TINY_MODEL, num_generations=2, max_new_tokens=4, eval_samples=3, eval_decoding="greedy")
    results = trainer(limit_val_batches=1).validate(module, datamodule())[0]
    for name in ("accuracy", "mean@3", "pass@3", "format_rate", "completion_length"):
        assert f"val/{name}" in results and f"val/{name}/basic_arithmetic" in results
    assert results["val/mean@3"] == results["val/accuracy"], "greedy samples are identical"
    assert 0 < results["val/completion_length"] <= 4


@pytest.mark.parametrize("field, value", [
    ("num_generations", 1), ("micro_batch_size", 0), ("max_new_tokens", 0), ("top_entropy_quantile", 0.0),
    ("ref_model_mixup_alpha", 1.5),
    ("epsilon", 1.5),
    ("epsilon", 0),
    ("beta", -0.1),
    ("max_nonfinite_updates", 0),
])
def test_invalid_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"model.{field}={value}"):
        MoTGRPOModule(TINY_MODEL, **{field: value})


def test_micro_batches_respect_the_token_budget():
    module = MoTGRPOModule(TINY_MODEL, micro_batch_size=8, micro_batch_tokens=250)
    rollout = type("R", (), {"tokens": torch.zeros(10, 40), "prompt_ids": torch.zeros(10, 60)})()
    assert module._micro_batches(rollout) == ([slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 10)], 5)
    unlimited = MoTGRPOModule(TINY_MODEL, micro_batch_size=8)
    assert unlimited._micro_batches(rollout) == ([slice(0, 8), slice(8, 10)], 2)


def test_micro_batches_are_padded_to_the_busiest_rank(monkeypatch):
    """Another rank has four micro-batches: this one runs four too, the extra ones not counted."""
    import motg_lightning.lightning.module as module_file

    monkeypatch.setattr(module_file, "max_over_ranks", lambda value, device=None: max(value, 4))
    module = MoTGRPOModule(TINY_MODEL, micro_batch_size=8)
    rollout = type("R", (), {"tokens": torch.zeros(10, 40), "prompt_ids": torch.zeros(10, 60)})()
    assert module._micro_batches(rollout) == ([slice(0, 8), slice(8, 10), slice(0, 1), slice(0, 1)], 2)


def test_sync_without_a_reference_model_is_rejected():
    with pytest.raises(ValueError, match="model.sync_ref_model=true needs a reference model: set model.beta"):
        MoTGRPOModule(TINY_MODEL, beta=0.0, sync_ref_model=True)


def test_reference_follows_the_policy_when_synced_and_is_checkpointed(tmp_path):
    L.seed_everything(0)
    module = MoTGRPOModule(
        TINY_MODEL, reward=RewardByLength(), num_generations=4, max_new_tokens=6, beta=0.1, sync_ref_model=True,
        ref_model_sync_steps=2, ref_model_mixup_alpha=1.0, loss_type="grpo", top_entropy_quantile=0.5,
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
    assert "reference_state_dict" in checkpoint


def test_forced_answer_must_close_the_thinking_phase():
    with pytest.raises(ValueError, match="model.forced_answer='\\\\n<answer>' must contain model.think_end='</think>'"):
        MoTGRPOModule(TINY_MODEL, thinking_budget=4, forced_answer="\n<answer>")


def test_reference_follows_the_policy_dtype():
    module = MoTGRPOModule(TINY_MODEL, beta=0.1)
    module.configure_model()
    module.policy.to(torch.bfloat16)  # what a bf16-true precision plugin does to the module's children
    assert next(module.reference.parameters()).dtype == torch.bfloat16


class RewardOnlyForSomeQuestions(RewardFunction):
    """Equal rewards (no variance) for questions whose text has even length, varied otherwise."""

    def __call__(self, completions, entries):
        output = super().__call__(completions, entries)
        output.total = torch.tensor([float(len(c)) if len(e["question"]) % 2 else 1.0 for c, e in zip(completions, entries)])
        return output


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_variance():
    L.seed_everything(0)
    module = MoTGRPOModule(TINY_MODEL, reward=RewardOnlyForSomeQuestions(), num_generations=2, max_new_tokens=4,
                           dynamic_sampling=True, max_sampling_rounds=6)
    seen = []
    original = module._policy_update

    def record(rollout, advantages, loss_mask):
        seen.append(advantages.reshape(-1, 2))
        return original(rollout, advantages, loss_mask)

    module._policy_update = record
    refills = []
    draw = module._next_refill_batch
    module._next_refill_batch = lambda: refills.append(1) or draw()
    run = trainer(max_steps=3)
    run.fit(module, datamodule(train_size=16))
    assert len(seen) == 3
    for advantages in seen:
        assert advantages.shape[0] == 2, "two prompts per step, as the batch size"
        assert (advantages.abs().sum(-1) > 0).all(), "every kept group has reward variance"
    assert refills, "some groups had no variance, so extra prompts were rolled out"


def test_non_finite_updates_are_skipped_then_the_run_stops_with_its_checkpoint(tmp_path, monkeypatch, caplog):
    import motg_lightning.lightning.module as module_file

    real = module_file.aggregate_loss

    def poisoned(per_step, *args):
        loss = real(per_step, *args)
        return loss * float("nan") if poison["on"] else loss

    poison = {"on": False}
    monkeypatch.setattr(module_file, "aggregate_loss", poisoned)

    class PoisonAfterTwoSteps(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            poison["on"] = trainer.global_step >= 2

    module = MoTGRPOModule(TINY_MODEL, num_generations=2, max_new_tokens=4, max_nonfinite_updates=3)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    run = trainer(max_steps=20, callbacks=[PoisonAfterTwoSteps(), checkpoint], enable_checkpointing=True)
    with caplog.at_level("WARNING"):
        run.fit(module, datamodule())
    assert run.global_step == 2, "the three poisoned updates were skipped, then the run stopped"
    assert "model.max_nonfinite_updates=3" in caplog.text
    saved = MoTGRPOModule.load_from_checkpoint(tmp_path / "epoch=0-step=2.ckpt")
    for name, value in saved.policy.named_parameters():
        assert torch.equal(value, dict(module.policy.named_parameters())[name]), "weights are those of the last finite update"
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())


def test_a_support_larger_than_the_vocabulary_is_refused():
    module = MoTGRPOModule(TINY_MODEL, mixture=Sampled(k=10**6))
    with pytest.raises(ValueError, match="model.mixture.k=1000000: above the model's vocabulary"):
        module.configure_model()


@pytest.mark.parametrize("options, message", [
    ({"max_new_tokens": 10**6}, "model.max_new_tokens=1000000: .* beyond the model's context"),
    ({"micro_batch_tokens": 20}, "model.micro_batch_tokens=20: one sequence .* does not fit"),
])
def test_lengths_that_cannot_train_fail_before_the_first_rollout(options, message):
    module = MoTGRPOModule(TINY_MODEL, num_generations=2, **options)
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
    module = MoTGRPOModule(TINY_MODEL, reward=RecordingReward(), num_generations=2, max_new_tokens=6, beta=0.1)
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
        TINY_MODEL, reward=RewardByLength(), num_generations=2, max_new_tokens=4, mask_truncated_completions=True,
        beta=0.1, stop_strings=[], optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
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


def test_dynamic_sampling_resumes_with_the_further_prompts_the_whole_run_drew(tmp_path, monkeypatch):
    """Where the extra prompts of dynamic sampling have got to is saved in checkpoints."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from motg_lightning.grpo.dynamic_sampling import RefillPrompts

    drawn = []
    next_batch = RefillPrompts.next_batch

    def recording(self):
        batch = next_batch(self)
        drawn.append([entry["question"] for entry in batch["entries"]])
        return batch

    monkeypatch.setattr(RefillPrompts, "next_batch", recording)

    def fit(ckpt_path=None):
        drawn.clear()
        # the default reward gives the random model's completions 0: no group varies, so every step draws 2 refills
        module = MoTGRPOModule(TINY_MODEL, num_generations=2, max_new_tokens=3, dynamic_sampling=True, max_sampling_rounds=3)
        saving = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
        trainer(max_steps=3, enable_checkpointing=True, callbacks=[saving]).fit(module, datamodule(train_size=8), ckpt_path=ckpt_path)
        return list(drawn)

    whole = fit()
    assert len(whole) == 6, "three steps, two refills each, across a pass over the four training batches"
    assert fit(ckpt_path=tmp_path / "epoch=0-step=1.ckpt") == whole[2:]


def test_a_resumed_run_that_has_not_refilled_yet_saves_the_refill_position_it_resumed_with():
    module = MoTGRPOModule(TINY_MODEL, num_generations=2, dynamic_sampling=True)
    position = {"passes": 2, "loader": {"generator": None, "yielded": 3}}
    module.on_load_checkpoint({"refill_prompts": position})
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["refill_prompts"] == position

"""``MoTGRPOModule``: mixture-of-token rollouts, Reasoning-Gym rewards and the GRPO update.

One training step (manual optimisation) in five blocks: roll out every prompt
``grpo.num_generations`` times with the mixture rule and score the completions; turn rewards into
group-normalised advantages and fix the steps that count; compute the likelihoods that stay fixed
during the update (old policy, reference); make ``grpo.num_iterations`` optimizer steps over
micro-batches; log (Jain & Rappazzo, arXiv 2509.21482; GRPO of Shao et al., arXiv 2402.03300,
with TRL's option names).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from peft import LoraConfig
from torch import Tensor

from ..adapters import LoraOptions, lora_config, reference_model, setting_as_dict
from ..collectives import max_over_ranks, world_size
from ..evaluation.held_out import EvaluationMetrics
from ..grpo.dynamic_sampling import RefillPrompts, dynamic_sample
from ..grpo.likelihood import trajectory_log_likelihood
from ..grpo.loss import sync_reference
from ..grpo.micro_batches import MicroBatch, micro_batches
from ..grpo.objective import (
    FixedLikelihoods, MicroBatchLoss, UpdateTargets, UpdateTotals, micro_batch_loss, update_targets,
)
from ..grpo.scored import ScoredRollout
from ..models import EMBEDDED_MODEL, DType, check_model_name, load_tokenizer
from ..rewards import RewardFunction
from ..rollout import Rollout, generate
from ..rules import Dirichlet, MixtureRule
from .curriculum_callback import CurriculumCallback
from .distributed import fsdp1_wrap_policy, unsharded_for_generation
from .held_out_steps import HeldOutSteps
from .predict_steps import PredictSteps
from .step_logging import StepLogging
from .model_setup import check_lengths, check_support, eos_ids, load_policy_and_reference, refuse_unsupported
from .optimization import configure_optimization, parameter_groups
from .optimizer_step import GuardedOptimizerStep, gradient_norm
from .options import EvaluationOptions, GRPOOptions, LoggingOptions, MemoryOptions, ModuleOptions, RolloutOptions
from .progress import step_progress_bar
from .random_state import TrainingRandomState
from .checkpoint_hooks import CheckpointHooks
from .resume_state import ResumeState


class MoTGRPOModule(StepLogging, HeldOutSteps, PredictSteps, CheckpointHooks):
    """GRPO over mixture-of-token trajectories.

    Args:
        model_name_or_path: causal LM to train: a Hugging Face hub id, a local folder, or
            `embedded:SmolLM2-135M-Instruct` / `tiny-random:SmolLM2-135M-Instruct` (shipped, no download).
        dtype: dtype the model's parameters are loaded in.
        mixture: the thinking-phase rule (`class_path` in YAML); default `Dirichlet(k=2)`.
        reward: reward terms and weights; default correctness + 0.2 × format.
        rollout: how completions are generated (:class:`RolloutOptions`).
        grpo: the objective and the update (:class:`GRPOOptions`).
        memory: micro-batching, chunking, checkpointing, sharding (:class:`MemoryOptions`).
        evaluation: how `validate`/`test` roll out (:class:`EvaluationOptions`).
        logging: completions and exploration measures in the logs (:class:`LoggingOptions`).
        peft: LoRA adapters through PEFT: the short form (r, lora_alpha, lora_dropout,
            target_modules) or a `peft.LoraConfig` (`class_path` in YAML); None trains every weight.
        optimizer: optimizer factory; default `AdamW(lr=1e-6)`.
        lr_scheduler: scheduler factory, stepped once per optimizer step.
    """

    def __init__(
        self,
        model_name_or_path: str = EMBEDDED_MODEL,
        dtype: DType = "float32",
        mixture: MixtureRule | None = None,
        reward: RewardFunction | None = None,
        rollout: RolloutOptions = RolloutOptions(),
        grpo: GRPOOptions = GRPOOptions(),
        memory: MemoryOptions = MemoryOptions(),
        evaluation: EvaluationOptions = EvaluationOptions(),
        logging: LoggingOptions = LoggingOptions(),
        peft: LoraOptions | LoraConfig | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        check_model_name(model_name_or_path)
        self.options = ModuleOptions.of(rollout=rollout, grpo=grpo, memory=memory, evaluation=evaluation, logging=logging)
        self.lora = lora_config(peft)
        # plain values: a checkpoint loads without unpickling classes
        self.hparams.update(self.options.as_dicts(), peft=setting_as_dict(peft))
        self.automatic_optimization = False
        self.mixture = mixture if mixture is not None else Dirichlet(k=2)
        self.reward = reward if reward is not None else RewardFunction()
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.policy: torch.nn.Module | None = None
        self._frozen: dict[str, torch.nn.Module] = {}  # the reference model, kept out of checkpoints
        self.held_out = EvaluationMetrics(self.options.evaluation.samples)
        # the training step's own random stream (rollouts, dynamic sampling's further rollouts), apart from validation's
        self.training_random = TrainingRandomState(torch.initial_seed())
        grpo = self.options.grpo
        self.optimizer_step = GuardedOptimizerStep(grpo.max_grad_norm, grpo.max_nonfinite_updates, after_step=self._after_optimizer_step,
                                                   clip=partial(self.clip_gradients, gradient_clip_algorithm="norm"))
        self.entropy_bonus = grpo.entropy_bonus()  # TRL's entropy_coef, fixed or adaptive
        self._refill: RefillPrompts | None = None  # extra prompts for dynamic sampling
        self._restored = ResumeState()  # from the checkpoint being resumed

    # ----------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        strategy = self._trainer.strategy if self._trainer is not None else None
        refuse_unsupported(strategy, self.options.grpo, adapted=self.lora is not None)
        if self.policy is None:
            self._load_models()
        # FSDP1: the strategy wraps the LightningModule with this policy (the policy's decoder layers) afterwards
        fsdp1_wrap_policy(strategy, self.policy, self.options.memory.shard_layer_classes)

    def _load_models(self) -> None:
        hp, options = self.hparams, self.options
        mesh = getattr(self, "_device_mesh", None)  # set by Lightning's ModelParallelStrategy (FSDP2)
        self.policy, reference = load_policy_and_reference(hp.model_name_or_path, hp.dtype, options.memory, options.grpo.beta != 0,
                                                           mesh=mesh, lora=self.lora, rule=self.mixture)
        if reference is not None:
            self._frozen["reference"] = reference
        check_support(self.mixture, self.policy)
        self.tokenizer = load_tokenizer(hp.model_name_or_path)
        self.settings = options.rollout.settings(self.tokenizer, eos_ids(self.tokenizer, self.policy))
        self.decoder = self.settings.decoder()

    def setup(self, stage: str) -> None:
        self.configure_model()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.held_out.register(getattr(datamodule, "task_names", []), self.device)
        if hasattr(datamodule, "longest_prompt"):
            datamodule.setup(stage)
            self.check_lengths(datamodule.longest_prompt)

    def check_lengths(self, longest_prompt: int) -> None:
        """Refuse, before any rollout, settings under which the longest prompt cannot be trained on."""
        check_lengths(self.policy, longest_prompt, self.options.rollout, self.options.memory)

    @property
    def reference(self) -> torch.nn.Module | None:
        """The frozen copy of the initial model (beta ≠ 0 without adapters), else None."""
        return self._frozen.get("reference")

    def place_reference(self) -> None:
        """Put the reference on the policy's device and in its dtype (the precision plugin's),
        which Lightning does not do for it: it is kept out of the module's children."""
        if self.reference is not None:
            self.reference.to(device=self.device, dtype=next(self.policy.parameters()).dtype)

    def configure_optimizers(self) -> Any:
        return configure_optimization(parameter_groups(self.policy, self.mixture), self.optimizer_factory, self.scheduler_factory)

    def configure_callbacks(self) -> list[L.Callback]:
        """Lightning's default progress bar, if the trainer has one, replaced by one that counts optimizer steps of
        ``trainer.max_steps`` (:mod:`motg_lightning.lightning.progress`); a CurriculumCallback for ``data.curriculum``."""
        bar = step_progress_bar(self.trainer.progress_bar_callback)
        curriculum = CurriculumCallback() if getattr(self.trainer.datamodule, "curriculum", None) is not None else None
        return [callback for callback in (bar, curriculum) if callback is not None]

    def on_fit_start(self) -> None:
        self.place_reference()
        # the rank's saved stream when resuming, else one seeded from the run's seed plus the rank
        # (ranks draw different rollouts for equal prompts)
        state = self._restored.rank_rng(self.global_rank)
        if state is not None:
            self.training_random.load_state_dict(state)
        else:
            self.training_random.seed(torch.initial_seed() + self.global_rank)

    # ---------------------------------------------------------------------------------- rollout
    def roll_out(self, batch: dict[str, Any], group_size: int, rule: MixtureRule | None = None,
                 reward: Callable[[list[str], list[dict[str, Any]]], Any] | None = None) -> ScoredRollout:
        """Roll out each prompt of ``batch`` ``group_size`` times with ``rule`` (default: the
        training rule) and score the completions with ``reward`` (default: the module's)."""
        ids = batch["prompt_ids"].repeat_interleave(group_size, dim=0)
        mask = batch["prompt_mask"].repeat_interleave(group_size, dim=0)
        entries = [entry for entry in batch["entries"] for _ in range(group_size)]
        start = time.perf_counter()
        with unsharded_for_generation(self.policy):
            rule = rule if rule is not None else self.mixture
            rollout = generate(self.policy, rule, ids, mask, self.settings, self.decoder, synced=world_size() > 1)
        seconds = time.perf_counter() - start
        completions = self.decode(rollout)
        return ScoredRollout(rollout, completions, entries, (reward or self.reward)(completions, entries), seconds)

    def decode(self, rollout: Rollout) -> list[str]:
        """Completion texts: the representative tokens of each sequence, special tokens dropped."""
        rows = [row[keep].tolist() for row, keep in zip(rollout.tokens.cpu(), rollout.completion_mask.cpu())]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    # --------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        # every random draw of the step comes from training's own stream, which validation never advances
        with self.training_random.active(self.device):
            scored = self.scored_rollouts(batch)                     # 1. rollouts and their rewards
            update_start = time.perf_counter()
            targets = self.update_targets(scored)                    # 2. advantages, the steps that count
            fixed = self.fixed_likelihoods(scored.rollout)           # 3. old policy's and reference's likelihoods
            update = self.optimize(scored.rollout, targets, fixed)   # 4. num_iterations optimizer steps
            update["update_seconds"] = time.perf_counter() - update_start  # scoring, backward and optimizer steps
            self.log_step(scored, update, batch_idx)                 # 5. statistics, completions, exploration
        # this process's own figures, for callbacks (the logged ones are averaged over processes)
        return {
            "loss": update["loss"], "local_reward": scored.rewards.total.mean(), "local_rows": torch.tensor(len(scored.entries)),
            "rewards": scored.rewards.total, "advantages": targets.advantages, "entropy": scored.rollout.entropy,
            "loss_mask": targets.loss_mask, "outcomes": scored.outcomes,  # every completion's task and correctness
            "policy_steps": targets.policy_mask.sum(),  # counted steps the policy term trains on (top_entropy_quantile)
        }

    def scored_rollouts(self, batch: dict[str, Any]) -> ScoredRollout:
        """The step's scored rollouts; under dynamic sampling, only groups with reward variance."""
        grpo = self.options.grpo
        roll_out = partial(self.roll_out, group_size=grpo.num_generations)
        if not grpo.dynamic_sampling:
            return roll_out(batch)
        return dynamic_sample(batch, roll_out, self._next_refill_batch, grpo.num_generations, grpo.max_sampling_rounds,
                              agree=lambda flag: max_over_ranks(int(flag), self.device) > 0)

    def update_targets(self, scored: ScoredRollout) -> UpdateTargets:
        """Advantages and the steps that count (:func:`motg_lightning.grpo.objective.update_targets`)."""
        grpo = self.options.grpo
        return update_targets(
            scored.rollout, scored.rewards.total.to(self.device), group_size=grpo.num_generations,
            scale_rewards=grpo.scale_rewards, mask_truncated_completions=grpo.mask_truncated_completions,
            loss_type=grpo.loss_type, top_entropy_quantile=grpo.top_entropy_quantile, max_new_tokens=self.options.rollout.max_new_tokens,
            mask_invalid_advantages=grpo.mask_invalid_advantages, best_first_step=grpo.best_first_step,
        )

    def fixed_likelihoods(self, rollout: Rollout) -> FixedLikelihoods:
        """The old policy's likelihoods when several optimizer steps share the rollout, and the reference's."""
        grpo = self.options.grpo
        old = self._log_likelihood_without_grad(self.policy, rollout) if grpo.num_iterations > 1 else None
        if grpo.beta == 0:
            return FixedLikelihoods(old, None)
        with reference_model(self.policy, self.reference) as reference:  # with adapters: the policy, adapters disabled
            return FixedLikelihoods(old, self._log_likelihood_without_grad(reference, rollout))

    def optimize(self, rollout: Rollout, targets: UpdateTargets, fixed: FixedLikelihoods) -> dict[str, Tensor]:
        """``num_iterations`` optimizer steps over micro-batches; the update's figures averaged over them."""
        totals = UpdateTotals(self.device, with_kl=fixed.reference is not None, with_entropy_bonus=self.entropy_bonus.enabled)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        for _ in range(self.options.grpo.num_iterations):
            for batch in self.micro_batches(rollout):
                part = self.micro_batch_loss(rollout, targets, fixed, batch)
                self.manual_backward(part.loss)
                totals.add(part)
            norm = gradient_norm(self.policy.parameters(), self.device)
            totals.add_step(norm, self.optimizer_step(optimizer, scheduler, norm))
            self.entropy_bonus.observe(totals.step_entropy)
            if self.optimizer_step.should_stop:
                self.trainer.should_stop = True
        return totals.averages()

    def micro_batches(self, rollout: Rollout) -> list[MicroBatch]:
        """The update's micro-batches, as many on this process as on the busiest one."""
        length = rollout.prompt_ids.shape[1] + rollout.tokens.shape[1]
        size = self.options.memory.rows_per_micro_batch(length)
        return micro_batches(rollout.tokens.shape[0], size, busiest=lambda count: max_over_ranks(count, self.device))

    def micro_batch_loss(self, rollout: Rollout, targets: UpdateTargets, fixed: FixedLikelihoods, batch: MicroBatch) -> MicroBatchLoss:
        grpo, rows, bonus = self.options.grpo, batch.rows, self.entropy_bonus
        scores = self._log_likelihood(self.policy, rollout.select(rows), with_entropy=bonus.enabled)
        log_likelihood, entropy = (scores[..., 0], scores[..., 1]) if bonus.enabled else (scores, None)
        old = fixed.old[rows] if fixed.old is not None else log_likelihood.detach()
        reference = fixed.reference[rows] if fixed.reference is not None else None
        return micro_batch_loss(
            log_likelihood, old, reference, targets.advantages[rows], batch.loss_mask(targets.loss_mask),
            targets.policy_mask[rows], targets.normalisers,
            term=grpo.policy_term, beta=grpo.beta, use_bias_correction_kl=grpo.use_bias_correction_kl, entropy=entropy, bonus_mask=batch.loss_mask(targets.bonus_mask), entropy_coef=bonus.applied,
        )

    def _log_likelihood(self, model: torch.nn.Module, rollout: Rollout, with_entropy: bool = False) -> Tensor:
        options = self.options
        return trajectory_log_likelihood(model, self.mixture, rollout, options.memory.logit_chunk_size, with_entropy, options.loss_filter)

    @torch.no_grad()
    def _log_likelihood_without_grad(self, model: torch.nn.Module, rollout: Rollout) -> Tensor:
        batches = self.micro_batches(rollout)
        values = [self._log_likelihood(model, rollout.select(batch.rows)) for batch in batches]
        return torch.cat([value for value, batch in zip(values, batches) if batch.counted])

    def _after_optimizer_step(self) -> None:
        grpo = self.options.grpo
        if grpo.sync_ref_model and self.global_step % grpo.ref_model_sync_steps == 0:
            sync_reference(self.reference, self.policy, grpo.ref_model_mixup_alpha)

    def _next_refill_batch(self) -> dict[str, Any]:
        """The next batch of further training prompts (:class:`RefillPrompts`)."""
        if self._refill is None:
            self._refill = RefillPrompts.for_trainer(self.trainer, self._restored.refill_prompts)
        return self.trainer.strategy.batch_to_device(self._refill.next_batch())

"""``MoTGRPOModule``: mixture-of-token rollouts, Reasoning-Gym rewards and the GRPO update.

One training step (manual optimisation): roll out every prompt ``num_generations`` times with the
mixture rule, score the completions, turn rewards into group-normalised advantages, then make
``num_iterations`` optimizer steps over micro-batches of the rollouts (Jain & Rappazzo, arXiv
2509.21482; GRPO of Shao et al., arXiv 2402.03300, with TRL's option names).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from lightning.pytorch.strategies import FSDPStrategy

from ..evaluation.exploration import exploration_metrics, token_exploration
from ..evaluation.held_out import EvalDecoding, EvaluationMetrics, evaluation_rule
from ..grpo.loss import (
    LossType,
    ScaleRewards,
    aggregate_loss,
    clipped_surrogate,
    group_advantages,
    high_entropy_mask,
    k3_kl,
    sync_reference,
    token_mean,
)
from .distributed import (
    fsdp1_wrap_policy,
    layer_classes,
    register_forward_method,
    shard_fully,
    unsharded_for_generation,
)
from ..collectives import gather_objects, gather_rows, max_over_ranks, world_size
from ..grpo.dynamic_sampling import RefillPrompts, dynamic_sample
from ..grpo.likelihood import SHARDED_METHOD, log_likelihood_of_steps, trajectory_log_likelihood
from ..evaluation.training_metrics import completions_markdown, rollout_metrics
from ..rules.paper import Dirichlet
from ..rules.base import MixtureRule
from ..models import EMBEDDED_MODEL, DType, load_causal_lm, load_tokenizer
from .options import check_options
from .optimization import configure_optimization
from .progress import step_progress_bar
from .random_state import TrainingRandomState
from ..rewards.scoring import RewardFunction, RewardOutput, format_reward
from ..rollout.record import Rollout, eval_mode
from ..rollout.settings import RolloutSettings
from ..rollout.generate import generate
from ..rollout.stops import TokenPatterns


log = logging.getLogger(__name__)
EXPLORATION_BUCKETS = 8  # step-index buckets of the entropy profiles
# Lightning warns that a manually optimised module's step checkpoints hold the weights after the
# update. That is what resuming needs here (a step's rollouts, update and data position are saved
# together, tests/test_resume.py), so the warning would only mislead.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning)


class MoTGRPOModule(L.LightningModule):
    """GRPO over mixture-of-token trajectories.

    Args:
        model_name_or_path: causal LM to train: a Hugging Face hub id, a local folder, or
            `embedded:SmolLM2-135M-Instruct` / `tiny-random:SmolLM2-135M-Instruct` (shipped, no download).
        mixture: the thinking-phase rule (`class_path` in YAML); default `Dirichlet(k=2)`.
        reward: reward terms and weights; default correctness + 0.2 × format.
        num_generations: group size G, rollouts per prompt (TRL's `num_generations`; paper: 10).
        max_new_tokens: completion length limit (TRL's `max_completion_length`; paper: 1024).
        thinking_budget: thinking steps after which the rollout appends `forced_answer` itself
            (budget forcing, Muennighoff et al., s1, arXiv 2501.19393); 0 forces at once, None never.
        forced_answer: text appended by budget forcing; forced tokens are not trained on.
        force_answer_on_eos: when the model draws EOS while still thinking, append
            `forced_answer` instead of stopping (needs `forced_answer`; not in the paper).
        cold_stop_entropy: Soft Thinking's cold stop (arXiv 2505.15778): append `forced_answer`
            once `cold_stop_steps` thinking steps in a row have a next-token entropy below this
            many nats (> 0); None disables it.
        cold_stop_steps: low-entropy thinking steps in a row that trigger the cold stop.
        top_p: top-p (nucleus) filter of the distribution every rule samples and mixes from, in
            (0, 1] (TRL's `top_p`; Soft Thinking's filter, arXiv 2505.15778); 1.0 keeps it all.
            The loss uses the unfiltered distribution.
        min_p: min-p filter of that distribution: keep the tokens at least this fraction as
            probable as the most probable one, in [0, 1) (TRL's `min_p`); None disables it.
        think_end: marker that ends the thinking phase.
        stop_strings: strings that end a completion besides EOS.
        beta: weight of the k3 KL to a frozen copy of the initial model (TRL's `beta`; paper: 0.1;
            0 loads no reference model).
        epsilon: ε of the ratio's clipping range [1 − ε, 1 + epsilon_high], in (0, 1) (TRL's
            `epsilon`).
        epsilon_high: upper clipping bound, > 0; DAPO's asymmetric clip when it differs from ε
            (arXiv 2503.14476; TRL's `epsilon_high`); None uses ε.
        num_iterations: optimizer steps per rollout batch (TRL's `num_iterations`); the rollout's
            log-likelihood before the first is the ratio's denominator.
        loss_type: aggregation of per-step losses, as TRL's `loss_type`: `grpo`, `bnpo`,
            `dr_grpo` or `dapo` (token mean over the batch, TRL's default).
        top_entropy_quantile: train the policy term only on this fraction of highest-entropy steps
            (arXiv 2506.01939); entropy is the sampling distribution's at rollout time. 1.0 keeps all.
        sync_ref_model: move the reference towards the policy every `ref_model_sync_steps`
            optimizer steps by `ref_model_mixup_alpha` (TR-DPO, arXiv 2404.09656; TRL's
            `sync_ref_model`); needs beta ≠ 0. The reference is then saved in checkpoints.
        ref_model_sync_steps: optimizer steps between two moves of the reference (TRL's
            `ref_model_sync_steps`).
        ref_model_mixup_alpha: α in [0, 1] of a move, reference ← (1 − α) reference + α policy
            (TRL's `ref_model_mixup_alpha`).
        scale_rewards: advantage scaling (TRL's `scale_rewards`): `group`, `batch` or `none`.
        mask_truncated_completions: leave completions that hit `max_new_tokens` out of the loss
            (TRL's `mask_truncated_completions`).
        dynamic_sampling: DAPO's dynamic sampling (arXiv 2503.14476): drop groups whose rewards
            are all equal and roll out further prompts from the training data until the batch is
            full again, for at most `max_sampling_rounds` rollouts per step (then train on the
            groups found). Needs a datamodule.
        max_sampling_rounds: rollouts per training step at most under dynamic sampling.
        micro_batch_size: rollouts per forward/backward pass at most (memory does not grow with G).
        micro_batch_tokens: also cap a micro-batch at this many tokens (prompt + completion
            positions); None caps by `micro_batch_size` alone.
        logit_chunk_size: steps per vocabulary projection in the loss, so no float32
            rollouts × steps × vocabulary tensor is held; None projects all steps at once.
        max_grad_norm: gradient-norm clip, > 0 (TRL's `max_grad_norm`; paper: 0.1); None disables it.
        max_nonfinite_updates: an update whose gradient is not finite is skipped and logged
            (`train/skipped_updates`); after this many in a row the run stops cleanly, keeping
            its checkpoints.
        optimizer: optimizer factory; default `AdamW(lr=1e-6)`.
        lr_scheduler: scheduler factory, stepped once per optimizer step.
        dtype: dtype the model's parameters are loaded in.
        gradient_checkpointing: recompute activations in the backward pass to save memory (TRL's
            `gradient_checkpointing`).
        log_completions_every_n_steps: how often sample completions go to TensorBoard's text tab;
            0 never.
        eval_decoding: how `validate`/`test` roll out: `mixture` (the training rule), `sample`
            (discrete sampling at its temperature) or `greedy`.
        eval_samples: rollouts per held-out question, for mean@k and pass@k.
        exploration_every_n_steps: how often the entropies along the reasoning and the
            hidden-state entropy per layer are logged (one extra forward); 0 never. Token-space
            exploration is logged every step.
        sync_every: decode steps between checks that every sequence stopped.
        shard_layer_classes: module classes sharded one by one under FSDP2 (Lightning's
            `ModelParallelStrategy`) and FSDP1 (`FSDPStrategy`, unless the strategy names its own
            `auto_wrap_policy`); default: the model's `_no_split_modules` (its decoder layers).
        compile_decode: `torch.compile` mode of the rollout's decode step; `reduce-overhead`
            captures it in a CUDA graph (the fast setting on a GPU); None decodes eagerly (CPU).
    """

    def __init__(
        self,
        model_name_or_path: str = EMBEDDED_MODEL,
        mixture: MixtureRule | None = None,
        reward: RewardFunction | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 128,
        thinking_budget: int | None = None,
        forced_answer: str = "</think>\n<answer>",
        force_answer_on_eos: bool = False,
        cold_stop_entropy: float | None = None,
        cold_stop_steps: int = 8,
        top_p: float = 1.0,
        min_p: float | None = None,
        think_end: str = "</think>",
        stop_strings: Sequence[str] = ("</answer>",),
        beta: float = 0.0,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        num_iterations: int = 1,
        loss_type: LossType = "dapo",
        top_entropy_quantile: float = 1.0,
        sync_ref_model: bool = False,
        ref_model_sync_steps: int = 512,
        ref_model_mixup_alpha: float = 0.6,
        scale_rewards: ScaleRewards = "group",
        mask_truncated_completions: bool = False,
        dynamic_sampling: bool = False,
        max_sampling_rounds: int = 3,
        micro_batch_size: int = 8,
        micro_batch_tokens: int | None = None,
        logit_chunk_size: int | None = 16,
        max_grad_norm: float | None = 1.0,
        max_nonfinite_updates: int = 3,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        dtype: DType = "float32",
        gradient_checkpointing: bool = False,
        log_completions_every_n_steps: int = 10,
        eval_decoding: EvalDecoding = "mixture",
        eval_samples: int = 1,
        exploration_every_n_steps: int = 10,
        sync_every: int = 16,
        compile_decode: str | None = None,
        shard_layer_classes: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        check_options(self.hparams)
        self.automatic_optimization = False
        self.mixture = mixture if mixture is not None else Dirichlet(k=2)
        self.reward = reward if reward is not None else RewardFunction()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.epsilon_high = epsilon if epsilon_high is None else epsilon_high
        self.policy: torch.nn.Module | None = None
        self._frozen: dict[str, torch.nn.Module] = {}  # the reference model, kept out of checkpoints
        self.evaluation = EvaluationMetrics(eval_samples)
        self._refill: RefillPrompts | None = None  # extra prompts for dynamic sampling
        self._restored_refill: dict[str, Any] | None = None  # its position, from a checkpoint
        self._nonfinite_in_row = 0
        # the training step's own random stream (rollouts, dynamic sampling's further rollouts), apart from validation's
        self.training_random = TrainingRandomState(torch.initial_seed())
        self._restored_rng: list[dict[str, Any]] | None = None  # every rank's, from a checkpoint, applied at fit start

    # ----------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, FSDPStrategy) and self.hparams.beta != 0:
            raise ValueError(
                f"model.beta={self.hparams.beta} with trainer.strategy=FSDPStrategy (FSDP1): the reference model would be "
                "its own FSDP1 root, whose embedding and LM head stay sharded outside its forward, where the loss uses "
                "them; use FSDP2 (--config configs/strategy/fsdp2.yaml), ddp, or model.beta=0."
            )
        if self.policy is None:
            self._load_models()
        # FSDP1: the strategy wraps the LightningModule with this policy (the policy's decoder layers) afterwards
        fsdp1_wrap_policy(strategy, self.policy, self.hparams.shard_layer_classes)

    def _load_models(self) -> None:
        hp = self.hparams
        self.policy = load_causal_lm(hp.model_name_or_path, hp.dtype, hp.gradient_checkpointing).train()
        reference = copy.deepcopy(self.policy).requires_grad_(False).eval() if hp.beta != 0 else None
        mesh = getattr(self, "_device_mesh", None)  # set by Lightning's ModelParallelStrategy (FSDP2)
        if mesh is not None:
            classes = layer_classes(self.policy, hp.shard_layer_classes)
            for model in (self.policy, reference):
                if model is not None:
                    shard_fully(model, mesh["data_parallel"], classes)
                    register_forward_method(model, SHARDED_METHOD, log_likelihood_of_steps)
        if reference is not None:
            self._frozen["reference"] = reference
        vocabulary = self.policy.get_input_embeddings().num_embeddings
        if self.mixture.k > vocabulary:
            raise ValueError(f"model.mixture.k={self.mixture.k}: above the model's vocabulary of {vocabulary} tokens.")
        self.tokenizer = load_tokenizer(hp.model_name_or_path)
        eos = {self.tokenizer.eos_token_id, *_as_list(self.policy.generation_config.eos_token_id)} - {None}
        forcing = hp.thinking_budget is not None or hp.force_answer_on_eos or hp.cold_stop_entropy is not None
        forced = self.tokenizer.encode(hp.forced_answer, add_special_tokens=False) if forcing else []
        self.settings = RolloutSettings(
            think_end=TokenPatterns.from_strings(self.tokenizer, [hp.think_end]),
            stop=TokenPatterns.from_strings(self.tokenizer, list(hp.stop_strings)),
            eos_ids=torch.tensor(sorted(eos)),
            pad_id=self.tokenizer.pad_token_id,
            forced_ids=torch.tensor(forced, dtype=torch.long),
            thinking_budget=hp.thinking_budget,
            force_answer_on_eos=hp.force_answer_on_eos,
            cold_stop_entropy=hp.cold_stop_entropy,
            cold_stop_steps=hp.cold_stop_steps,
            max_new_tokens=hp.max_new_tokens,
            sync_every=hp.sync_every,
            top_p=hp.top_p,
            min_p=hp.min_p,
            compile_decode=hp.compile_decode,
        )
        self.decoder = self.settings.decoder()

    def setup(self, stage: str) -> None:
        self.configure_model()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.evaluation.register(getattr(datamodule, "task_names", []), self.device)
        if hasattr(datamodule, "longest_prompt"):
            datamodule.setup(stage)
            self.check_lengths(datamodule.longest_prompt)

    def check_lengths(self, longest_prompt: int) -> None:
        """Refuse, before any rollout, settings under which the longest prompt cannot be trained on."""
        hp = self.hparams
        needed = longest_prompt + hp.max_new_tokens
        context = getattr(self.policy.config, "max_position_embeddings", None)
        if context is not None and needed > context:
            raise ValueError(
                f"model.max_new_tokens={hp.max_new_tokens}: with the longest prompt ({longest_prompt} tokens) a sequence needs "
                f"{needed} positions, beyond the model's context of {context}; lower it or set data.max_prompt_length."
            )
        if hp.micro_batch_tokens is not None and needed > hp.micro_batch_tokens:
            raise ValueError(
                f"model.micro_batch_tokens={hp.micro_batch_tokens}: one sequence (longest prompt {longest_prompt} + "
                f"max_new_tokens {hp.max_new_tokens} = {needed} tokens) does not fit; raise it to at least {needed}."
            )

    @property
    def reference(self) -> torch.nn.Module | None:
        reference = self._frozen.get("reference")
        if reference is not None:  # follow the policy's device and the precision plugin's dtype
            dtype = next(self.policy.parameters()).dtype
            if reference.device != self.device or next(reference.parameters()).dtype != dtype:
                reference.to(device=self.device, dtype=dtype)
        return reference

    def configure_optimizers(self) -> Any:
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        return configure_optimization(parameters, self.optimizer_factory, self.scheduler_factory)

    def configure_callbacks(self) -> list[L.Callback]:
        """Lightning's default progress bar, if the trainer has one, replaced by one that counts
        optimizer steps of ``trainer.max_steps`` (:mod:`motg_lightning.lightning.progress`)."""
        bar = step_progress_bar(self.trainer.progress_bar_callback)
        return [bar] if bar is not None else []

    # ---------------------------------------------------------------------------------- rollout
    def rollout(
        self, batch: dict[str, Any], group_size: int, rule: MixtureRule | None = None
    ) -> tuple[Rollout, list[str], list[dict], float]:
        """Roll out each prompt ``group_size`` times with ``rule`` (default: the training rule);
        return the rollout, texts, entries, seconds."""
        ids = batch["prompt_ids"].repeat_interleave(group_size, dim=0)
        mask = batch["prompt_mask"].repeat_interleave(group_size, dim=0)
        entries = [entry for entry in batch["entries"] for _ in range(group_size)]
        start = time.perf_counter()
        with unsharded_for_generation(self.policy):
            rule = rule if rule is not None else self.mixture
            rollout = generate(self.policy, rule, ids, mask, self.settings, self.decoder, synced=world_size() > 1)
        seconds = time.perf_counter() - start
        return rollout, self.decode(rollout), entries, seconds

    def decode(self, rollout: Rollout) -> list[str]:
        """Completion texts: the representative tokens of each sequence, special tokens dropped."""
        rows = [row[keep].tolist() for row, keep in zip(rollout.tokens.cpu(), rollout.completion_mask.cpu())]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    # --------------------------------------------------------------------------------- training
    def _micro_batches(self, rollout: Rollout) -> tuple[list[slice], int]:
        """Row slices of at most ``micro_batch_size`` rollouts and ``micro_batch_tokens`` tokens,
        and how many are real: when distributed, every rank gets as many slices as the rank with
        the most (extra ones repeat row 0 and are not counted), so forwards and backwards — which
        are collectives under DDP and FSDP — match across ranks even when rollouts differ in size."""
        count, length = rollout.tokens.shape[0], rollout.prompt_ids.shape[1] + rollout.tokens.shape[1]
        size = self.hparams.micro_batch_size
        if self.hparams.micro_batch_tokens is not None:
            size = max(1, min(size, self.hparams.micro_batch_tokens // length))
        real = [slice(start, min(start + size, count)) for start in range(0, count, size)]
        matched = max_over_ranks(len(real), self.device)
        return real + [slice(0, 1)] * (matched - len(real)), len(real)

    def _log_likelihood(self, model: torch.nn.Module, rollout: Rollout) -> Tensor:
        return trajectory_log_likelihood(model, self.mixture, rollout, self.hparams.logit_chunk_size)

    @torch.no_grad()
    def _log_likelihood_without_grad(self, model: torch.nn.Module, rollout: Rollout) -> Tensor:
        slices, real = self._micro_batches(rollout)
        values = [self._log_likelihood(model, rollout.select(rows)) for rows in slices]
        return torch.cat(values[:real])

    def _scored_rollout(self, batch: dict[str, Any]) -> tuple[Rollout, list[str], list[dict], RewardOutput, float]:
        rollout, completions, entries, seconds = self.rollout(batch, self.hparams.num_generations)
        return rollout, completions, entries, self.reward(completions, entries), seconds

    def _next_refill_batch(self) -> dict[str, Any]:
        """The next batch of further training prompts (:class:`RefillPrompts`)."""
        if self._refill is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                raise ValueError("model.dynamic_sampling=true draws extra prompts from a datamodule; pass one to fit().")
            distributed = self.trainer.strategy.distributed_sampler_kwargs if self.trainer.world_size > 1 else None
            self._refill = RefillPrompts(datamodule.train_dataloader(), distributed)
            if self._restored_refill is not None:
                self._refill.load_state_dict(self._restored_refill)
        return self.trainer.strategy.batch_to_device(self._refill.next_batch())

    def _any_rank(self, flag: bool) -> bool:
        return max_over_ranks(int(flag), self.device) > 0

    def on_fit_start(self) -> None:
        # the rank's saved stream when resuming, else one seeded from the run's seed plus the rank
        # (ranks draw different rollouts for equal prompts)
        states, self._restored_rng = self._restored_rng, None
        if states is not None and self.global_rank < len(states):
            self.training_random.load_state_dict(states[self.global_rank])
        else:
            self.training_random.seed(torch.initial_seed() + self.global_rank)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        # every random draw of the step comes from training's own stream, which validation never advances
        with self.training_random.active(self.device):
            return self._train_on(batch, batch_idx)

    def _train_on(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        hp = self.hparams
        if hp.dynamic_sampling:
            rollout, completions, entries, rewards, seconds, rounds = dynamic_sample(
                batch, self._scored_rollout, self._next_refill_batch, hp.num_generations, hp.max_sampling_rounds,
                agree=self._any_rank,
            )
        else:
            (rollout, completions, entries, rewards, seconds), rounds = self._scored_rollout(batch), 1
        # TRL scales by the std of every process's rewards: gather them (groups need no other rank)
        batch_rewards = gather_rows(rewards.total.to(self.device)) if hp.scale_rewards == "batch" else None
        advantages = group_advantages(rewards.total.to(self.device), hp.num_generations, hp.scale_rewards,
                                      batch_rewards=batch_rewards)
        loss_mask = rollout.loss_mask
        if hp.mask_truncated_completions:
            loss_mask = loss_mask & ~rollout.truncated.unsqueeze(-1)
        update_start = time.perf_counter()
        update = self._policy_update(rollout, advantages, loss_mask)
        update["update_seconds"] = time.perf_counter() - update_start  # scoring, backward and optimizer steps
        policy_steps = update.pop("policy_steps")

        stats = {**rollout_metrics(rollout, rewards, hp.num_generations, seconds), **update}
        stats.update(token_exploration(rollout.tokens, rollout.thinking & rollout.completion_mask, hp.num_generations))
        stats["lr"] = self.optimizers().param_groups[0]["lr"]
        stats["sampling_rounds"] = float(rounds)
        if self.device.type == "cuda":
            stats["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        # on this process's device: NCCL cannot average the CPU tensors made from rewards
        stats = {name: torch.as_tensor(value, dtype=torch.float32, device=self.device) for name, value in stats.items()}
        reward = stats.pop("reward")
        self.log("train/reward", reward, prog_bar=True, batch_size=len(entries), sync_dist=True)
        self.log_dict({f"train/{name}": value for name, value in stats.items()}, on_step=True, batch_size=len(entries), sync_dist=True)
        if hp.log_completions_every_n_steps > 0 and batch_idx % hp.log_completions_every_n_steps == 0:
            self._log_completions([e["question"] for e in entries], completions, rewards.total)
        if hp.exploration_every_n_steps > 0 and batch_idx % hp.exploration_every_n_steps == 0:
            self._log_exploration(rollout)
        # this process's own figures, for callbacks (the logged ones are averaged over processes)
        return {
            "loss": update["loss"], "local_reward": rewards.total.mean(), "local_rows": torch.tensor(len(entries)),
            "rewards": rewards.total, "advantages": advantages, "entropy": rollout.entropy, "loss_mask": loss_mask,
            "policy_steps": policy_steps,  # counted steps the policy term trains on (top_entropy_quantile)
        }

    def _gradient_norm(self) -> Tensor:
        """Total L2 norm of the policy's gradients before clipping (stays on the device)."""
        grads = [p.grad.detach() for p in self.policy.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.get_total_norm(grads).float()
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # sharded (FSDP2) gradients

    def _update_is_finite(self, gradient_norm: Tensor) -> bool:
        """False for a non-finite gradient (same on every rank: gradients are reduced). After
        ``max_nonfinite_updates`` such updates in a row the run stops, keeping its checkpoints."""
        if torch.isfinite(gradient_norm):
            self._nonfinite_in_row = 0
            return True
        self._nonfinite_in_row += 1
        limit = self.hparams.max_nonfinite_updates
        log.warning("Non-finite gradient (norm %s): update skipped (%d in a row).", float(gradient_norm), self._nonfinite_in_row)
        if self._nonfinite_in_row >= limit:
            log.error(
                "Stopping: %d updates in a row had non-finite gradients (model.max_nonfinite_updates=%d). "
                "The weights are those of the last finite update and checkpoints are kept. Lower the learning "
                "rate, set model.max_grad_norm, or use bf16 instead of fp16.", self._nonfinite_in_row, limit,
            )
            self.trainer.should_stop = True
        return False

    def _policy_update(self, rollout: Rollout, advantages: Tensor, loss_mask: Tensor) -> dict[str, Tensor]:
        """``num_iterations`` optimizer steps over micro-batches; returns loss, KL, clip fraction
        and gradient norm averaged over the iterations."""
        hp = self.hparams
        counted = loss_mask.sum()
        total_tokens = counted
        if hp.loss_type == "dapo":  # every process's steps count; gradients are averaged over processes
            total_tokens = self.trainer.strategy.reduce(total_tokens.float(), reduce_op="mean")
        # TRL takes the entropy quantile over every process's counted steps: gather them
        batch_entropy = gather_rows(rollout.entropy[loss_mask].float()) if hp.top_entropy_quantile < 1 else None
        policy_mask = high_entropy_mask(rollout.entropy, loss_mask, hp.top_entropy_quantile, batch_entropy)
        old = self._log_likelihood_without_grad(self.policy, rollout) if hp.num_iterations > 1 else None
        reference = self._log_likelihood_without_grad(self.reference, rollout) if hp.beta != 0 else None
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        names = ("loss", "kl", "clip_fraction", "grad_norm", "skipped_updates")
        sums = {name: torch.zeros((), device=self.device) for name in names}
        for _ in range(hp.num_iterations):
            slices, real = self._micro_batches(rollout)
            for index, rows in enumerate(slices):
                mask = loss_mask[rows] if index < real else torch.zeros_like(loss_mask[rows])
                log_likelihood = self._log_likelihood(self.policy, rollout.select(rows))
                old_rows = old[rows] if old is not None else log_likelihood.detach()
                per_step, clipped = clipped_surrogate(log_likelihood, old_rows, advantages[rows], hp.epsilon, self.epsilon_high)
                per_step = per_step * policy_mask[rows]
                if reference is not None:
                    kl = k3_kl(log_likelihood, reference[rows])
                    per_step = per_step + hp.beta * kl
                    sums["kl"] += token_mean(kl.detach(), mask, counted)
                loss = aggregate_loss(per_step, mask, hp.loss_type, total_tokens, loss_mask.shape[0], hp.max_new_tokens)
                self.manual_backward(loss)
                sums["loss"] += loss.detach()
                sums["clip_fraction"] += token_mean(clipped.float(), mask, counted)
            norm = self._gradient_norm()
            sums["grad_norm"] += norm
            if not self._update_is_finite(norm):
                optimizer.zero_grad(set_to_none=True)
                sums["skipped_updates"] += 1
                continue
            if hp.max_grad_norm is not None:
                self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            if hp.sync_ref_model and self.global_step % hp.ref_model_sync_steps == 0:
                sync_reference(self.reference, self.policy, hp.ref_model_mixup_alpha)
        averages = {name: value / hp.num_iterations for name, value in sums.items() if name != "skipped_updates"}
        averages["skipped_updates"] = sums["skipped_updates"]
        averages["policy_steps"] = policy_mask.sum()
        if reference is None:
            del averages["kl"]
        return averages

    def _log_exploration(self, rollout: Rollout) -> None:
        """Entropies along the reasoning and hidden-state entropy per layer
        (:func:`motg_lightning.evaluation.exploration.exploration_metrics`). This process's values: the
        names present can differ between processes, so they are not averaged across them."""
        with unsharded_for_generation(self.policy), eval_mode(self.policy):
            values = exploration_metrics(self.policy, self.mixture, rollout, EXPLORATION_BUCKETS)
        self.log_dict(values, on_step=True)

    def _log_completions(self, questions: list[str], completions: list[str], rewards: Tensor) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            experiment.add_text("train/completions", completions_markdown(questions, completions, rewards), self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.hparams.sync_ref_model:  # the reference has moved away from the initial weights
            checkpoint["reference_state_dict"] = self.reference.state_dict()
        # every rank's training random stream, so a resumed run draws what the uninterrupted one would have
        checkpoint["training_rng"] = gather_objects(self.training_random.state_dict())
        if self._refill is not None:  # where dynamic sampling's further prompts have got to
            checkpoint["refill_prompts"] = self._refill.state_dict()
        elif self._restored_refill is not None:  # resumed, and no refill drawn since
            checkpoint["refill_prompts"] = self._restored_refill

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "reference_state_dict" in checkpoint:
            self.configure_model()
            self.reference.load_state_dict(checkpoint["reference_state_dict"])
        self._restored_rng = checkpoint.get("training_rng")
        if self._restored_rng is None and "rollout_rng" in checkpoint:
            # older checkpoints hold rank 0's global generators, which training drew from then
            old = checkpoint["rollout_rng"]
            cuda = old["cuda"][0] if len(old["cuda"]) else None
            self._restored_rng = [{"seed": torch.initial_seed(), "cpu": old["cpu"], "cuda": cuda}]
        self._restored_refill = checkpoint.get("refill_prompts")

    # ------------------------------------------------------------------------------- evaluation
    def _evaluation_step(self, batch: dict[str, Any]) -> None:
        samples = self.hparams.eval_samples
        rule = evaluation_rule(self.hparams.eval_decoding, self.mixture)
        rollout, completions, entries, _ = self.rollout(batch, group_size=samples, rule=rule)
        rewards = self.reward(completions, entries)
        formatted = torch.tensor([format_reward(text) > 0 for text in completions])
        shape = (len(batch["tasks"]), samples)
        self.evaluation.update(
            batch["tasks"], rewards.correct.view(shape).to(self.device), formatted.view(shape).to(self.device),
            rollout.completion_mask.sum(-1).view(shape),
        )

    def _log_evaluation(self, prefix: str) -> None:
        values = self.evaluation.compute(prefix)
        if values:  # torchmetrics has synchronised the values; sync_dist only averages equal numbers
            self.log(f"{prefix}/accuracy", values.pop(f"{prefix}/accuracy"), prog_bar=True, sync_dist=True)
            self.log_dict(values, sync_dist=True)
        self.evaluation.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]

"""`model.grpo`: the objective and the update, with TRL's option names."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Literal

from ..grpo.entropy_bonus import EntropyBonus
from ..grpo.loss import LossType, ScaleRewards
from ..grpo.surrogates import CLIPPED, ImportanceSamplingLevel, PolicyTerm
from .option_checks import at_least

LossDistribution = Literal["unfiltered", "filtered"]


@dataclass(frozen=True)
class GRPOOptions:
    """`model.grpo`: the objective and the update (GRPO of Shao et al., arXiv 2402.03300, with
    TRL's option names).

    Args:
        num_generations: group size G, rollouts per prompt (TRL's `num_generations`; paper: 10).
        beta: weight of the k3 KL to a frozen copy of the initial model (TRL's `beta`; paper: 0.1;
            0 loads no reference model).
        epsilon: ε of the ratio's clipping range [1 − ε, 1 + epsilon_high], in (0, 1) (TRL's `epsilon`).
        epsilon_high: upper clipping bound, > 0; DAPO's asymmetric clip when it differs from ε
            (arXiv 2503.14476; TRL's `epsilon_high`); None uses ε. With `cispo`, the cap of the
            ratio itself (ScaleRL, arXiv 2510.13786, recommends 5.0).
        use_bias_correction_kl: weigh each step's KL by its importance ratio, gradient included,
            which makes the KL's gradient the unbiased reverse-KL gradient (DeepSeek-V3.2, arXiv
            2512.02556; TRL's `use_bias_correction_kl`, whose default is true). False keeps the
            plain k3 KL of DeepSeekMath and of the MoT-G paper's code.
        num_iterations: optimizer steps per rollout batch (TRL's `num_iterations`); the rollout's
            log-likelihood before the first is the ratio's denominator.
        loss_type: the policy term and how per-step losses add up, as TRL's `loss_type`: `grpo`,
            `bnpo`, `dr_grpo`, `dapo` (token mean over the batch, TRL's default) and `luspo` (LUSPO,
            arXiv 2602.05261) clip the ratio; `cispo` weighs each step's log-likelihood by the
            capped ratio (MiniMax-M1, arXiv 2506.13585); `sapo` gates it smoothly (SAPO, arXiv
            2511.20347); `vespo` weighs it by a Gamma-shaped function of the rollout's importance
            weight (VESPO, arXiv 2602.10693).
        importance_sampling_level: `token` (one ratio per step) or `sequence` (one per rollout,
            the geometric mean of its step ratios: GSPO, arXiv 2507.18071; TRL's name).
        delta: cap of the unclipped ratio, > 1 (two-sided clipping, INTELLECT-2, arXiv 2505.07291;
            TRL's `delta`); clipped loss types only; None: no cap.
        sapo_temperature_pos: `sapo`'s gate temperature for positive advantages, > 0.
        sapo_temperature_neg: `sapo`'s gate temperature for the other advantages, > 0.
        vespo_k_pos: `vespo`'s power k for non-negative advantages, >= 0: how fast rollouts whose
            weight fell below 1 fade.
        vespo_lambda_pos: `vespo`'s decay λ for non-negative advantages, > 0: how fast rollouts
            whose weight grew above 1 fade.
        vespo_k_neg: `vespo`'s k for negative advantages, >= 0.
        vespo_lambda_neg: `vespo`'s λ for negative advantages, > 0.
        loss_distribution: the distribution the loss scores steps under: `unfiltered` (the whole
            tempered distribution, as TRL) or `filtered` (what `model.rollout.top_p`/`min_p` leave,
            the recorded step kept in it): the distribution the steps were drawn from, so the
            ratio to it is 1 at θ = θ_old (TRL's issue 6789 shows the bias of `unfiltered`).
        entropy_coef: weight c >= 0 of an entropy bonus −c·H on the loss, H the mean entropy of the
            policy's next-token distribution over the thinking steps it trains on (TRL's
            `entropy_coef`); 0 without `use_adaptive_entropy`: none.
        use_adaptive_entropy: adapt c after each optimizer step (Skywork-OR1, arXiv 2505.22312;
            TRL's name): applied only while the last measured H is at most `entropy_target`, raised
            by `entropy_coef_delta` when it was, else lowered, within [`entropy_coef_min`, `entropy_coef_max`].
        entropy_target: the adaptive form's target entropy, in nats.
        entropy_coef_delta: the adaptive form's step of c, > 0.
        entropy_coef_min: the adaptive form's lowest c, >= 0.
        entropy_coef_max: the adaptive form's highest c, >= entropy_coef_min.
        top_entropy_quantile: train the policy term only on this fraction of highest-entropy steps
            (arXiv 2506.01939); entropy is the sampling distribution's at rollout time. 1.0 keeps all.
        scale_rewards: advantage scaling (TRL's `scale_rewards`): `group`, `batch` or `none`.
        mask_truncated_completions: leave completions that hit `max_new_tokens` out of the loss
            (TRL's `mask_truncated_completions`).
        mask_invalid_advantages: give truncated completions advantage 0 and leave them out of
            their group's mean and std (Latent-GRPO's invalid-sample masking, arXiv 2604.27998;
            its code's test of an invalid sample is truncation). They still count in the KL.
        best_first_step: in each group, train the first step only on the rollout with a positive
            advantage that the policy found most likely (mean step log-likelihood at rollout
            time); the others' first step gets no policy term (Latent-GRPO's best correct path,
            arXiv 2604.27998: latent mixtures of several correct first steps are not correct).
        sync_ref_model: move the reference towards the policy every `ref_model_sync_steps`
            optimizer steps by `ref_model_mixup_alpha` (TR-DPO, arXiv 2404.09656; TRL's
            `sync_ref_model`); needs beta ≠ 0. The reference is then saved in checkpoints.
        ref_model_sync_steps: optimizer steps between two moves of the reference.
        ref_model_mixup_alpha: α in [0, 1] of a move, reference ← (1 − α) reference + α policy.
        dynamic_sampling: DAPO's dynamic sampling (arXiv 2503.14476): drop groups whose rewards
            are all equal and roll out further prompts from the training data until the batch is
            full again, for at most `max_sampling_rounds` rollouts per step. Needs a datamodule.
        max_sampling_rounds: rollouts per training step at most under dynamic sampling.
        max_grad_norm: gradient-norm clip, > 0 (TRL's `max_grad_norm`; paper: 0.1); None disables it.
        max_nonfinite_updates: an update whose gradient is not finite is skipped and logged
            (`train/skipped_updates`); after this many in a row the run stops cleanly, keeping
            its checkpoints.
    """

    num_generations: int = 8
    beta: float = 0.0
    use_bias_correction_kl: bool = False
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    loss_type: LossType = "dapo"
    importance_sampling_level: ImportanceSamplingLevel = "token"
    delta: float | None = None
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0
    loss_distribution: LossDistribution = "unfiltered"
    entropy_coef: float = 0.0
    use_adaptive_entropy: bool = False
    entropy_target: float = 0.2
    entropy_coef_delta: float = 0.005
    entropy_coef_min: float = 0.0
    entropy_coef_max: float = 1.0
    top_entropy_quantile: float = 1.0
    scale_rewards: ScaleRewards = "group"
    mask_truncated_completions: bool = False
    mask_invalid_advantages: bool = False
    best_first_step: bool = False
    sync_ref_model: bool = False
    ref_model_sync_steps: int = 512
    ref_model_mixup_alpha: float = 0.6
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 3
    max_grad_norm: float | None = 1.0
    max_nonfinite_updates: int = 3

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"model.grpo.num_generations={self.num_generations}: GRPO needs groups of at least 2.")
        at_least("grpo", 1, {"num_iterations": self.num_iterations, "ref_model_sync_steps": self.ref_model_sync_steps,
                              "max_sampling_rounds": self.max_sampling_rounds,
                              "max_nonfinite_updates": self.max_nonfinite_updates})
        if not 0 < self.top_entropy_quantile <= 1:
            raise ValueError(f"model.grpo.top_entropy_quantile={self.top_entropy_quantile}: must be in (0, 1]; 1.0 trains "
                             "on every step.")
        if not 0 < self.epsilon < 1 or (self.epsilon_high is not None and not 0 < self.epsilon_high):
            raise ValueError(f"model.grpo.epsilon={self.epsilon}, model.grpo.epsilon_high={self.epsilon_high}: the clip "
                             "range needs 0 < epsilon < 1 and epsilon_high > 0 (TRL's defaults: 0.2 and epsilon).")
        if not self.beta >= 0:
            raise ValueError(f"model.grpo.beta={self.beta}: the KL weight must be >= 0 (0 loads no reference model).")
        if not 0 <= self.ref_model_mixup_alpha <= 1:
            raise ValueError(f"model.grpo.ref_model_mixup_alpha={self.ref_model_mixup_alpha}: must be in [0, 1].")
        if self.sync_ref_model and self.beta == 0:
            raise ValueError("model.grpo.sync_ref_model=true needs a reference model: set model.grpo.beta to a non-zero value.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"model.grpo.max_grad_norm={self.max_grad_norm}: must be > 0; null disables gradient clipping.")
        self._check_policy_term()

    def _check_policy_term(self) -> None:
        if self.delta is not None and (not self.delta > 1 or self.loss_type not in CLIPPED):
            raise ValueError(f"model.grpo.delta={self.delta}: caps the ratio of the clipped loss types "
                             f"({', '.join(CLIPPED)}) and must be > 1 (TRL suggests above 1 + epsilon_high); null disables it.")
        if self.loss_type == "cispo" and (self.epsilon_high is None or self.epsilon_high < 1):
            raise ValueError(f"model.grpo.loss_type=cispo caps the ratio itself at model.grpo.epsilon_high="
                             f"{self.epsilon_high}: set it to at least 1 (ScaleRL recommends 5.0).")
        if not (self.sapo_temperature_pos > 0 and self.sapo_temperature_neg > 0):
            raise ValueError(f"model.grpo.sapo_temperature_pos={self.sapo_temperature_pos}, model.grpo.sapo_temperature_neg="
                             f"{self.sapo_temperature_neg}: both must be > 0.")
        if not (self.vespo_k_pos >= 0 and self.vespo_k_neg >= 0 and self.vespo_lambda_pos > 0 and self.vespo_lambda_neg > 0):
            raise ValueError(f"model.grpo.vespo_k_pos={self.vespo_k_pos}, vespo_k_neg={self.vespo_k_neg}, vespo_lambda_pos="
                             f"{self.vespo_lambda_pos}, vespo_lambda_neg={self.vespo_lambda_neg}: need k >= 0 and λ > 0.")
        if not (self.entropy_coef >= 0 and self.entropy_coef_delta > 0 and 0 <= self.entropy_coef_min <= self.entropy_coef_max):
            raise ValueError(f"model.grpo.entropy_coef={self.entropy_coef}, entropy_coef_delta={self.entropy_coef_delta}, "
                             f"entropy_coef_min={self.entropy_coef_min}, entropy_coef_max={self.entropy_coef_max}: need "
                             "entropy_coef >= 0, entropy_coef_delta > 0 and 0 <= entropy_coef_min <= entropy_coef_max.")
        if self.loss_distribution not in ("unfiltered", "filtered"):
            raise ValueError(f"model.grpo.loss_distribution={self.loss_distribution!r}: choose unfiltered or filtered.")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ValueError(f"model.grpo.importance_sampling_level={self.importance_sampling_level!r}: choose token or sequence.")
        sequence = self.importance_sampling_level == "sequence"
        if sequence and self.loss_type in ("bnpo", "dr_grpo", "dapo", "cispo"):
            warnings.warn(f"model.grpo.importance_sampling_level=sequence with loss_type={self.loss_type}: the loss sums "
                          "per-step values, weighting each rollout by its length; GSPO's setup is loss_type=grpo.", stacklevel=3)
        if self.use_bias_correction_kl and self.beta == 0:
            warnings.warn("model.grpo.use_bias_correction_kl=true with model.grpo.beta=0: there is no KL term to correct.",
                          stacklevel=3)
        if self.loss_type == "vespo" and sequence:
            warnings.warn("model.grpo.loss_type=vespo weighs each rollout by its own sequence-level weight: "
                          "importance_sampling_level=sequence changes nothing; leave it at token.", stacklevel=3)
        if self.loss_type == "luspo" and not sequence:
            warnings.warn("model.grpo.loss_type=luspo is GSPO's loss scaled by length: its paper uses "
                          "importance_sampling_level=sequence.", stacklevel=3)

    def entropy_bonus(self) -> EntropyBonus:
        """A new entropy bonus of these settings (its adaptive state starts afresh)."""
        return EntropyBonus(self.entropy_coef, self.use_adaptive_entropy, self.entropy_target, self.entropy_coef_delta,
                            self.entropy_coef_min, self.entropy_coef_max)

    @property
    def policy_term(self) -> PolicyTerm:
        """The policy term's settings (:mod:`motg_lightning.grpo.surrogates`)."""
        shared = {field.name: getattr(self, field.name) for field in fields(PolicyTerm)}  # TRL's names on both
        return PolicyTerm(**{**shared, "epsilon_high": self.clip_high})

    @property
    def clip_high(self) -> float:
        """The upper clipping bound: `epsilon_high`, or ε when it is unset."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

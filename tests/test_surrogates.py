"""The policy term's forms (GSPO's sequence level, CISPO, SAPO, LUSPO, VESPO, two-sided clipping), each
against values worked out by hand from TRL 1.16's definitions."""

import math

import pytest
import torch

from motg_lightning.grpo.loss import aggregate_loss
from motg_lightning.grpo.objective import Normalisers, micro_batch_loss
from motg_lightning.grpo.surrogates import PolicyTerm, importance_log_weights, policy_loss
from motg_lightning.lightning.options import GRPOOptions, ModuleOptions

MASK = torch.tensor([[True, True, False]])


def test_the_sequence_level_ratio_is_the_geometric_mean_over_the_counted_steps():
    log_likelihood = torch.tensor([[0.1, 0.3, 5.0]])
    assert importance_log_weights(log_likelihood, torch.zeros(1, 3), MASK, "sequence").item() == pytest.approx(0.2)
    loss, clipped = policy_loss(log_likelihood, torch.zeros(1, 3), torch.tensor([1.0]), MASK,
                                PolicyTerm(loss_type="grpo", importance_sampling_level="sequence"))
    # ratio e^0.2 = 1.2214 > 1.2: clipped for the whole rollout, -min(1.2214, 1.2) on every step
    assert loss.shape == (1, 1) and loss.item() == pytest.approx(-1.2) and clipped.item()


def test_at_the_old_policy_the_sequence_gradient_spreads_the_advantage_over_the_counted_steps():
    log_likelihood = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    loss, _ = policy_loss(log_likelihood, log_likelihood.detach(), torch.tensor([2.0]), MASK,
                          PolicyTerm(loss_type="grpo", importance_sampling_level="sequence"))
    loss.sum().backward()
    # d/dℓ_t of −A·exp(mean_t(ℓ − ℓ_old)) at ρ = 1 is −A/|counted| on each counted step, 0 elsewhere
    torch.testing.assert_close(log_likelihood.grad, torch.tensor([[-1.0, -1.0, 0.0]]))


def test_cispo_weighs_each_log_likelihood_by_the_capped_ratio_as_a_constant():
    log_likelihood = torch.tensor([[math.log(6.0), math.log(0.5)]], requires_grad=True)
    loss, clipped = policy_loss(log_likelihood, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
                                PolicyTerm(loss_type="cispo", epsilon_high=5.0))
    torch.testing.assert_close(loss, torch.tensor([[-5.0 * math.log(6.0), -0.5 * math.log(0.5)]]))
    loss.sum().backward()
    torch.testing.assert_close(log_likelihood.grad, torch.tensor([[-5.0, -0.5]]), msg="a capped step keeps its gradient")
    assert clipped.tolist() == [[True, False]]


def test_sapo_gates_the_ratio_smoothly_with_a_temperature_per_advantage_sign():
    log_likelihood = torch.zeros(2, 1, requires_grad=True)
    term = PolicyTerm(loss_type="sapo", sapo_temperature_pos=1.0, sapo_temperature_neg=1.05)
    loss, clipped = policy_loss(log_likelihood, torch.zeros(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1, dtype=torch.bool), term)
    # at ρ = 1 the gate σ(τ(ρ−1))·4/τ is 2/τ: −2 for A = 1 (τ = 1), +2/1.05 for A = −1
    torch.testing.assert_close(loss, torch.tensor([[-2.0], [2.0 / 1.05]]))
    loss.sum().backward()
    # σ'(0)·4 = 1: on-policy, SAPO's gradient is the plain policy gradient −A
    torch.testing.assert_close(log_likelihood.grad, torch.tensor([[-1.0], [1.0]]))
    assert not clipped.any()
    far = policy_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), term)[0]
    assert far.item() == pytest.approx(-4 * torch.sigmoid(torch.tensor(math.e**2 - 1)).item()), "bounded by 4/τ"


def test_delta_caps_the_ratio_of_a_negative_advantage():
    stale = torch.tensor([[math.log(3.0)]])
    one = torch.ones(1, 1, dtype=torch.bool)
    without = policy_loss(stale, torch.zeros(1, 1), torch.tensor([-1.0]), one, PolicyTerm(loss_type="dapo"))[0]
    capped = policy_loss(stale, torch.zeros(1, 1), torch.tensor([-1.0]), one, PolicyTerm(loss_type="dapo", delta=2.0))[0]
    assert without.item() == pytest.approx(3.0) and capped.item() == pytest.approx(2.0)


def test_vespo_weighs_each_rollout_by_a_gamma_function_of_its_whole_importance_weight():
    log_likelihood = torch.tensor([[0.3, 0.2, 5.0], [-0.1, -0.1, 5.0]], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0])
    loss, clipped = policy_loss(log_likelihood, torch.zeros(2, 3), advantages, torch.cat([MASK, MASK]), PolicyTerm(loss_type="vespo"))
    # log w = Σ of the counted log-ratios: 0.5 (A ≥ 0: k = 2, λ = 3) and −0.2 (A < 0: k = 3, λ = 2)
    phi = torch.tensor([[math.exp(3 + 2 * 0.5 - 3 * math.exp(0.5))], [math.exp(2 + 3 * -0.2 - 2 * math.exp(-0.2))]])
    torch.testing.assert_close(loss, -phi * advantages[:, None] * log_likelihood.detach())
    loss.sum().backward()
    torch.testing.assert_close(log_likelihood.grad, (-phi * advantages[:, None]).expand(2, 3), msg="φ is a constant weight")
    assert not clipped.any()
    on_policy = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    policy_loss(on_policy, on_policy.detach(), torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool),
                PolicyTerm(loss_type="vespo"))[0].sum().backward()
    torch.testing.assert_close(on_policy.grad, torch.tensor([[-2.0, -2.0]]), msg="φ(1) = 1: the plain policy gradient")


def test_new_loss_types_aggregate_as_trl_does():
    per_step = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    tokens = torch.tensor(3)
    assert aggregate_loss(per_step, mask, "sapo", tokens, 2, 3).item() == pytest.approx((1.5 + 4.0) / 2)  # as grpo
    assert aggregate_loss(per_step, mask, "cispo", tokens, 2, 3).item() == pytest.approx(7.0 / 3)  # as dapo
    assert aggregate_loss(per_step, mask, "luspo", tokens, 2, 3).item() == pytest.approx((3.0 + 4.0) / 2)  # sums, averaged
    assert aggregate_loss(per_step, mask, "vespo", tokens, 2, 3).item() == pytest.approx(7.0 / 3)  # as dapo


def test_a_micro_batch_at_the_sequence_level_counts_the_clip_fraction_over_steps():
    log_likelihood = torch.tensor([[0.1, 0.3, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    normalisers = Normalisers(counted=mask.sum(), batch_tokens=mask.sum(), sequences=2, max_new_tokens=3)
    part = micro_batch_loss(log_likelihood, torch.zeros(2, 3), None, torch.tensor([1.0, 1.0]), mask, mask, normalisers,
                            term=PolicyTerm(loss_type="grpo", importance_sampling_level="sequence"))
    assert part.clip_fraction.item() == pytest.approx(2 / 5), "the first rollout's 2 counted steps were clipped"
    assert part.loss.item() == pytest.approx((-1.2 - 1.0) / 2)


@pytest.mark.parametrize("options, message", [
    ({"loss_type": "cispo"}, r"^model.grpo.loss_type=cispo caps the ratio itself at model.grpo.epsilon_high=None"),
    ({"delta": 0.5}, r"^model.grpo.delta=0.5: caps the ratio of the clipped loss types"),
    ({"delta": 3.0, "loss_type": "sapo"}, r"^model.grpo.delta=3.0: caps the ratio of the clipped loss types"),
    ({"sapo_temperature_neg": 0.0}, r"^model.grpo.sapo_temperature_pos=1.0, model.grpo.sapo_temperature_neg=0.0: both must be > 0"),
    ({"importance_sampling_level": "rollout"}, r"^model.grpo.importance_sampling_level='rollout'"),
    ({"vespo_lambda_neg": 0.0}, r"^model.grpo.vespo_k_pos=2.0, .*vespo_lambda_neg=0.0: need k >= 0 and λ > 0"),
])
def test_impossible_settings_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        GRPOOptions(**options)


def test_the_options_give_the_policy_term():
    term = GRPOOptions(loss_type="luspo", importance_sampling_level="sequence", epsilon_high=0.28, delta=2.0,
                       vespo_k_pos=1.5, vespo_lambda_pos=2.5, vespo_k_neg=3.5, vespo_lambda_neg=4.5).policy_term
    assert term == PolicyTerm(loss_type="luspo", importance_sampling_level="sequence", epsilon=0.2, epsilon_high=0.28, delta=2.0,
                              sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, vespo_k_pos=1.5, vespo_lambda_pos=2.5,
                              vespo_k_neg=3.5, vespo_lambda_neg=4.5)
    with pytest.warns(UserWarning, match="weighting each rollout by its length"):
        GRPOOptions(importance_sampling_level="sequence", loss_type="dapo")
    with pytest.warns(UserWarning, match="sequence changes nothing"):
        GRPOOptions(importance_sampling_level="sequence", loss_type="vespo")
    with pytest.warns(UserWarning, match="no KL term to correct"):
        GRPOOptions(use_bias_correction_kl=True)
    with pytest.warns(UserWarning, match="nothing is filtered"):
        ModuleOptions.of(rollout={}, grpo=GRPOOptions(loss_distribution="filtered"), memory={}, evaluation={}, logging={})

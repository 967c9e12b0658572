"""HRPO's hybrid rule and its gate (motg_lightning/rules/hybrid.py), and the parameters a rule
trains with the policy (motg_lightning/rules/parameters.py): attached to the model, trained at
their learning rates, saved, kept initial in the reference, exported beside the weights."""

import copy
import math

import pytest
import torch
from test_module import RewardByLength, datamodule, trainer

from motg_lightning.export import export_checkpoint
from motg_lightning.lightning.module import MoTGRPOModule
from motg_lightning.lightning.options import GRPOOptions, RolloutOptions
from motg_lightning.models import TINY_MODEL, load_causal_lm
from motg_lightning.rules import HRPO, attach_rule_parameters
from motg_lightning.rules.base import MixtureStep
from motg_lightning.rules.hybrid import HybridGate
from motg_lightning.rules.parameters import RULE_PARAMETERS, load_rule_parameters

from helpers import EMBEDDING, random_log_probs


def test_the_gate_blends_the_token_embedding_with_the_hidden_state_as_hrpo_writes_it():
    gate = HybridGate(2, c=8.0, gate_min=0.99, gate_max=0.999, dtype=torch.float32, device=torch.device("cpu"))
    with torch.no_grad():
        for weight in (gate.recurrence_weight, gate.input_weight):
            weight.zero_()
        gate.recurrence_bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # r = (1/2, 3/4)
        gate.input_bias.zero_()  # i = 1/2
        gate.decay.copy_(torch.tensor([2.0, -1.0]))  # Λ
    e, h = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]])
    softplus = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]  # softplus(−Λ)
    a = [math.exp(-8 * softplus[0] * 0.5), math.exp(-8 * softplus[1] * 0.75)]
    expected = [a[d] * e[0, d].item() + math.sqrt(1 - a[d] ** 2 + 1e-8) * 0.5 * h[0, d].item() for d in range(2)]
    torch.testing.assert_close(gate(e, h), torch.tensor([expected]))


def test_the_gate_starts_with_a_between_the_square_roots_of_gate_min_and_gate_max():
    torch.manual_seed(0)
    gate = HybridGate(64, c=8.0, gate_min=0.99, gate_max=0.999, dtype=torch.float32, device=torch.device("cpu"))
    e = torch.zeros(1, 64)  # r = σ(b_r) = 1/2 at the start: a = u^(1/2)
    a = torch.exp(-8.0 * torch.nn.functional.softplus(-gate.decay) * torch.sigmoid(gate.recurrence_bias + e))
    assert (a >= math.sqrt(0.99) - 1e-6).all() and (a <= math.sqrt(0.999) + 1e-6).all()


class _Holder(torch.nn.Module):
    """The least a rule's parameters attach to: a module with an input embedding."""

    def __init__(self, embedding):
        super().__init__()
        self.embedding = embedding

    def get_input_embeddings(self):
        return self.embedding


def test_thinking_steps_are_gated_with_the_projected_hidden_state_and_the_others_are_plain():
    rule = HRPO(k=4)
    embedding = copy.deepcopy(EMBEDDING)
    gate = attach_rule_parameters(_Holder(embedding), rule)
    torch.manual_seed(0)
    step = rule.choose(random_log_probs(batch=6), embedding)
    step.extras["hybrid"][3:] = False  # rows the phase fed as plain tokens
    weights = step.weights
    projected = (weights.unsqueeze(-1) * embedding(step.support)).sum(-2) / weights.norm(dim=-1, keepdim=True)
    expected = torch.cat([gate(embedding(step.token[:3]), projected[:3]), embedding(step.token[3:])])
    torch.testing.assert_close(rule.embed(embedding, step), expected)
    assert (step.support == step.token[:, None]).logical_and(weights > 0).any(-1).all(), "x is drawn from the top k"


def test_a_model_without_the_gate_is_refused_naming_the_fix():
    step = MixtureStep(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), torch.zeros(1, dtype=torch.long),
                       {"hybrid": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(RuntimeError, match=r"HRPO trains parameters of its own.*attach_rule_parameters\(model, rule\)"):
        HRPO().embed(EMBEDDING, step)


def _gate(model):
    return getattr(model.get_input_embeddings(), RULE_PARAMETERS)


def test_the_gate_trains_with_the_policy_at_its_learning_rates_is_saved_and_exported(tmp_path):
    torch.manual_seed(0)
    module = MoTGRPOModule(TINY_MODEL, mixture=HRPO(k=8, gate_lr_scale=20.0, decay_lr_scale=200.0), reward=RewardByLength(),
                           rollout=RolloutOptions(max_new_tokens=8, thinking_budget=4), grpo=GRPOOptions(num_generations=2, beta=0.1),
                           optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    module.configure_model()
    initial = copy.deepcopy(_gate(module.policy).state_dict())
    run = trainer(max_steps=1)
    run.fit(module, datamodule())
    assert run.optimizers[0].param_groups[0]["lr_scale"] == 1.0, "the model's own group first: train/lr logs it"
    groups = {group["lr_scale"]: group for group in run.optimizers[0].param_groups}
    assert {scale: group["lr"] for scale, group in groups.items()} == pytest.approx({1.0: 1e-3, 20.0: 2e-2, 200.0: 2e-1})
    assert [len(groups[scale]["params"]) for scale in (20.0, 200.0)] == [4, 1], "W_r, b_r, W_i, b_i; then Λ"
    trained = _gate(module.policy).state_dict()
    assert all(not torch.equal(trained[name], initial[name]) for name in initial), "every gate parameter moved"
    assert all(torch.equal(value, initial[name]) for name, value in _gate(module.reference).state_dict().items()), \
        "the reference keeps the initial gate"
    run.save_checkpoint(tmp_path / "hrpo.ckpt")
    restored = MoTGRPOModule.load_from_checkpoint(tmp_path / "hrpo.ckpt", weights_only=False)  # its reward is test_module's
    for name, value in _gate(restored.policy).state_dict().items():
        torch.testing.assert_close(value, trained[name])
    other = MoTGRPOModule(TINY_MODEL, grpo=GRPOOptions(num_generations=2, beta=0.1))
    other.configure_model()
    with pytest.raises(ValueError, match=r"^model.mixture: the checkpoint holds parameters of a rule of its own"):
        other.on_load_checkpoint(torch.load(tmp_path / "hrpo.ckpt", weights_only=False))
    folder = export_checkpoint(tmp_path / "hrpo.ckpt", tmp_path / "exported")
    loaded = load_causal_lm(str(folder))
    for name, value in load_rule_parameters(loaded, HRPO(k=8), folder).state_dict().items():
        torch.testing.assert_close(value, trained[name])

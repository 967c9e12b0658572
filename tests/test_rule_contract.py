"""What every mixture rule promises through the shared interface (docs/method.md §7, issue: every
soft-token method behind one interface)."""

import pytest
import torch

from motg_lightning.rules import REGISTRY

from helpers import EMBEDDING, VOCAB, carrying_rule_parameters, random_log_probs

# Every registered rule, at k = 3 unless its options are given here, then the variants that its
# default settings do not reach. A case is (registry name, constructor options).
OPTIONS = {"discrete": {}, "nucleus": {"k": 3, "top_p": 0.5}, "gaussian": {"k": 4}}
VARIANTS = [("dirichlet", {"k": 3, "likelihood": "density"}), ("multiplex", {"k": 3, "weighting": "renormalised"})]
CASES = [(name, OPTIONS.get(name, {"k": 3})) for name in REGISTRY] + VARIANTS


def _rule(case, likelihood=None):
    name, options = case
    rule = REGISTRY[name].rule(**options)
    if likelihood is not None:
        rule.likelihood = likelihood
    return rule


def _id(value):
    """Test id of a case (its name and options) or of a likelihood."""
    if isinstance(value, str):
        return value
    name, options = value
    return "-".join([name, *(f"{key}={option}" for key, option in options.items())])


def _name(rule):
    return f"{type(rule).__name__}-{rule.likelihood}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_weights_on_the_simplex_and_the_token_carries_weight(case):
    rule = _rule(case)
    torch.manual_seed(0)
    step = rule.choose(random_log_probs(), EMBEDDING)
    assert step.support.shape == step.weights.shape == (64, rule.support_size)
    assert (step.weights >= 0).all()
    torch.testing.assert_close(step.weights.sum(-1), torch.ones(64))
    chosen = step.support == step.token[:, None]
    assert (chosen & (step.weights > 0)).any(-1).all(), "representative must be a support token with weight"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_every_likelihood_has_finite_gradients(case):
    rule = _rule(case)
    torch.manual_seed(0)
    for likelihood in rule.LIKELIHOODS:
        rule.likelihood = likelihood
        logits = torch.randn(16, VOCAB, requires_grad=True)
        step = rule.choose(rule.log_probs(logits).detach(), EMBEDDING)
        value = rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING)
        value.sum().backward()
        assert value.shape == (16,) and torch.isfinite(value).all(), likelihood
        assert torch.isfinite(logits.grad).all(), likelihood


# k = 1 (or no noise, or a dominant sample): the input is one token's embedding, and that token is
# drawn from p (sampling rules) or is its mode (rules built on the top k). Each registered rule
# gives its way there and the settings that take it there.
ONE_TOKEN = {
    "discrete": ("sample", {"temperature": 1.0}),
    "topk": ("greedy", {"k": 1}),
    "dirichlet": ("greedy", {"k": 1}),
    "sampled": ("sample", {"k": 1, "temperature": 1.0}),
    "nucleus": ("greedy", {"k": 1}),
    "elementwise_max": ("greedy", {"k": 1}),
    "gumbel": ("greedy", {"k": 1}),
    "multiplex": ("sample", {"k": 1, "temperature": 1.0}),
    "gaussian": ("greedy", {"k": 4, "thinking_temperature": 1e-7, "noise_scale": 0.0, "likelihood": "representative"}),
    "mixture_of_inputs": ("sample", {"k": 3, "beta": 1e6, "temperature": 1.0}),
    "latent_grpo": ("greedy", {"k": 1, "noise_scale": 0.0}),
}
SAMPLED_AT_ONE = [_rule((name, options)) for name, (limit, options) in ONE_TOKEN.items() if limit == "sample"]
GREEDY_AT_ONE = [_rule((name, options)) for name, (limit, options) in ONE_TOKEN.items() if limit == "greedy"]


# Rules whose input never reduces to one token's embedding, and why.
NO_ONE_TOKEN = {"hrpo": "its gate always adds a share of the projected hidden state (tests/test_hybrid.py)"}


def test_every_registered_rule_has_its_one_token_limit_checked():
    assert set(ONE_TOKEN) | set(NO_ONE_TOKEN) == set(REGISTRY) and not set(ONE_TOKEN) & set(NO_ONE_TOKEN)


def _assert_one_token_input(rule, step):
    torch.testing.assert_close(rule.embed(EMBEDDING, step), EMBEDDING(step.token), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", SAMPLED_AT_ONE, ids=_name)
def test_reduces_to_discrete_sampling(rule):
    torch.manual_seed(0)
    probs = torch.tensor([0.55, 0.3, 0.1, 0.05])
    log_probs = probs.log().expand(20000, 4)
    step = rule.choose(log_probs, EMBEDDING)
    _assert_one_token_input(rule, step)
    frequencies = torch.bincount(step.token, minlength=4).float() / 20000
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)
    if rule.likelihood in ("representative", "sum"):
        torch.testing.assert_close(rule.step_log_likelihood(log_probs, step, EMBEDDING), log_probs.gather(-1, step.token[:, None]).squeeze(-1))


@pytest.mark.parametrize("rule", GREEDY_AT_ONE, ids=_name)
def test_reduces_to_greedy_discrete_decoding(rule):
    torch.manual_seed(0)
    log_probs = random_log_probs()
    step = rule.choose(log_probs, EMBEDDING)
    _assert_one_token_input(rule, step)
    assert torch.equal(step.token, log_probs.argmax(-1))


# Every rule under each filter of the sampling distribution (Soft Thinking's top-p and min-p).
FILTERS = {"top_p=0.5": {"top_p": 0.5}, "min_p=0.1": {"min_p": 0.1}, "min_p=0.9": {"min_p": 0.9}}
RULES_BY_LIKELIHOOD = [(case, likelihood) for case in CASES for likelihood in _rule(case).LIKELIHOODS]


@pytest.mark.parametrize("filters", FILTERS.values(), ids=FILTERS.keys())
@pytest.mark.parametrize(("case", "likelihood"), RULES_BY_LIKELIHOOD, ids=_id)
def test_filtered_sampling_mixes_only_kept_tokens_and_scores_finitely(case, likelihood, filters):
    from motg_lightning.rules.filters import SamplingFilter, recorded_ids

    rule = _rule(case, likelihood)
    torch.manual_seed(0)
    logits = torch.randn(64, VOCAB, requires_grad=True)
    sampling = SamplingFilter(**filters).apply(rule.log_probs(logits).detach())
    step = rule.choose(sampling, EMBEDDING)
    removed = ~torch.isfinite(sampling.gather(-1, step.support))
    assert (step.weights[removed] == 0).all(), "a token the filter removed was mixed in"
    torch.testing.assert_close(step.weights.sum(-1), torch.ones(64))
    values = []
    for scored in (rule.log_probs(logits), SamplingFilter(**filters).apply(rule.log_probs(logits), recorded_ids(step))):
        values.append(rule.step_log_likelihood(scored, step, EMBEDDING))
        logits.grad = None
        values[-1].sum().backward()
        assert torch.isfinite(values[-1]).all() and torch.isfinite(logits.grad).all()
    unfiltered, filtered = (value.detach() for value in values)
    # loss_distribution=filtered: at θ = θ_old the step scores as under the distribution it was drawn from
    torch.testing.assert_close(filtered, rule.step_log_likelihood(sampling, step, EMBEDDING), atol=1e-5, rtol=1e-5)
    assert (unfiltered <= filtered + 1e-5).all(), "the whole distribution gives a drawn step no more than the filtered one"
    if likelihood != "density":  # a density of the draws given the kept slots is the same either way
        assert (unfiltered < filtered - 1e-3).any(), "the filters removed mass: the unfiltered score is biased"


ROLLOUT_FILTERS = {name: FILTERS[name] for name in ("top_p=0.5", "min_p=0.1")}


@pytest.mark.parametrize("filters", ROLLOUT_FILTERS.values(), ids=ROLLOUT_FILTERS.keys())
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_filtered_rollouts_score_as_they_were_generated_with_finite_gradients(tiny_model, prompts, make_settings, case, filters):
    """Through the real rollout and loss: scored under the filtered distribution
    (``loss_distribution: filtered``), the likelihood equals the one recorded while generating,
    the distribution the steps were drawn from, so the ratio to it is 1 at θ = θ_old; scored
    unfiltered (the default, as TRL) it is no higher (the bias of TRL's issue 6789; at this
    temperature the kept tokens hold nearly all the mass, the test above shows the gap). Every
    gradient is finite either way."""
    from dataclasses import replace

    from motg_lightning.grpo.likelihood import trajectory_log_likelihood
    from motg_lightning.rollout.generate import generate
    from motg_lightning.rules.filters import SamplingFilter

    rule = _rule(case)
    rule.temperature = 0.02  # the tiny random model is nearly uniform: sharpen it so the filters cut the top k
    tiny_model = carrying_rule_parameters(tiny_model, rule)
    torch.manual_seed(0)
    ids, mask = prompts
    settings = replace(make_settings(max_new_tokens=8, thinking_budget=4), **filters)
    rollout = generate(tiny_model, rule, ids, mask, settings)
    assert rollout.thinking.any() and torch.isfinite(rollout.log_likelihood).all()
    counted = rollout.loss_mask
    recorded = rollout.log_likelihood[counted]
    for scoring in (SamplingFilter(**filters), None):
        tiny_model.zero_grad()
        recomputed = trajectory_log_likelihood(tiny_model, rule, rollout, chunk_size=4, scoring=scoring)
        recomputed[counted].sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters() if p.grad is not None)
        if scoring is not None:
            torch.testing.assert_close(recomputed[counted], recorded, atol=1e-4, rtol=1e-4)
    tiny_model.zero_grad()
    assert (recomputed[counted] <= recorded + 1e-4).all(), "the whole distribution gives a drawn step no more than the filtered one"

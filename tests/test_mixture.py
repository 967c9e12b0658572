import pytest
import torch

from motg_lightning.rules import REGISTRY
from motg_lightning.rules.paper import Dirichlet, ElementwiseMax, Nucleus, Sampled, TopK
from motg_lightning.rules.base import MixtureStep, draw_representative, sample_index, weight_entropy

from helpers import EMBEDDING, random_log_probs

# Discrete has one slot, Multiplex draws with replacement, Mixture of Inputs puts its sample beside the top k.
REPEATING = {"discrete", "multiplex", "mixture_of_inputs"}


@pytest.mark.parametrize("name", [name for name in REGISTRY if name not in REPEATING])
def test_support_has_k_distinct_tokens(name):
    rule = REGISTRY[name].rule(k=3)
    torch.manual_seed(1)
    step = rule.choose(random_log_probs(), EMBEDDING)
    assert all(len(set(row.tolist())) == 3 for row in step.support)


def test_topk_support_is_the_top_k_with_renormalised_weights():
    log_probs = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]]))
    step = TopK(k=2, temperature=1.0).choose(log_probs, EMBEDDING)
    assert step.support.tolist() == [[1, 2]]
    torch.testing.assert_close(step.weights, torch.tensor([[0.625, 0.375]]))


def test_nucleus_cuts_where_the_mass_passes_top_p():
    log_probs = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.3, 0.3, 0.3, 0.1]]))
    step = Nucleus(k=3, temperature=1.0, top_p=0.8).choose(log_probs, EMBEDDING)
    assert (step.weights > 0).sum(-1).tolist() == [2, 3]
    torch.testing.assert_close(step.weights[0], torch.tensor([2 / 3, 1 / 3, 0.0]))


def test_sampled_draws_from_the_distribution_without_replacement():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.7, 0.2, 0.1, 0.0]])).expand(4000, 4)
    step = Sampled(k=2, temperature=1.0).choose(log_probs, EMBEDDING)
    assert (step.support != 3).all()
    assert (step.support[:, 0] != step.support[:, 1]).all()
    first = torch.bincount(step.support[:, 0], minlength=4).float() / 4000
    torch.testing.assert_close(first[:3], torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_dirichlet_weights_average_to_the_renormalised_top_k():
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([[0.45, 0.15, 0.4]])).expand(20000, 3)
    step = Dirichlet(k=2, temperature=1.0, alpha=1.0).choose(log_probs, EMBEDDING)
    assert step.support[0].tolist() == [0, 2]
    torch.testing.assert_close(step.weights.mean(0), torch.tensor([0.45 / 0.85, 0.4 / 0.85]), atol=0.01, rtol=0)


def test_dirichlet_stays_finite_on_extreme_distributions():
    log_probs = torch.log_softmax(torch.tensor([[80.0, -80.0, -80.0]] * 100), -1)
    step = Dirichlet(k=2, temperature=0.5).choose(log_probs, EMBEDDING)
    assert torch.isfinite(step.weights).all()
    torch.testing.assert_close(step.weights.sum(-1), torch.ones(100))


def test_sample_index_follows_the_probabilities_and_never_picks_zero():
    torch.manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).expand(20000, 6)
    counts = torch.bincount(sample_index(probs), minlength=6).float() / 20000
    assert counts[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(counts[[1, 3, 4]], torch.tensor([0.5, 0.3, 0.2]), atol=0.015, rtol=0)
    unnormalised = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    assert sample_index(unnormalised).tolist() == [1, 0]


def test_representative_is_looked_up_in_its_own_support():
    support = torch.tensor([[7, 9]]).expand(1000, 2)
    weights = torch.tensor([[0.0, 1.0]]).expand(1000, 2)
    assert (draw_representative(support, weights) == 9).all()


def test_embed_is_the_weighted_sum_and_elementwise_max_the_maximum():
    embedding = torch.nn.Embedding(5, 4)
    support, weights = torch.tensor([[1, 3]]), torch.tensor([[0.25, 0.75]])
    mixed = TopK().embed(embedding, MixtureStep(support, weights, support[:, 0]))
    torch.testing.assert_close(mixed[0], 0.25 * embedding.weight[1] + 0.75 * embedding.weight[3])
    maximum = ElementwiseMax().embed(embedding, MixtureStep(support, weights, support[:, 0]))
    torch.testing.assert_close(maximum[0], torch.maximum(embedding.weight[1], embedding.weight[3]))
    one_hot = ElementwiseMax().embed(embedding, MixtureStep(torch.tensor([[2, 2]]), torch.tensor([[1.0, 0.0]]), torch.tensor([2])))
    torch.testing.assert_close(one_hot[0], embedding.weight[2])


def test_representative_and_weighted_likelihoods_on_hand_numbers():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    step = MixtureStep(support=torch.tensor([[0, 1]]), weights=torch.tensor([[0.9, 0.1]]), token=torch.tensor([1]))
    representative = TopK(likelihood="representative").step_log_likelihood(log_probs, step, EMBEDDING)
    torch.testing.assert_close(representative, torch.log(torch.tensor([0.3])))
    weighted = TopK(likelihood="weighted").step_log_likelihood(log_probs, step, EMBEDDING)
    expected = 0.625 * torch.log(torch.tensor(0.5)) + 0.375 * torch.log(torch.tensor(0.3))
    torch.testing.assert_close(weighted, expected.reshape(1))


def test_weighted_likelihood_ignores_slots_outside_the_support_and_has_gradients():
    logits = torch.randn(2, 6, requires_grad=True)
    step = MixtureStep(support=torch.tensor([[0, 1, 2], [3, 4, 5]]), weights=torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]), token=torch.tensor([0, 3]))
    rule = Nucleus(k=3, likelihood="weighted", temperature=1.0)
    value = rule.step_log_likelihood(rule.log_probs(logits), step, EMBEDDING)
    torch.testing.assert_close(value[1], torch.log_softmax(logits, -1)[1, 3])
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_temperature_scales_the_log_probabilities():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(TopK(temperature=0.5).log_probs(logits), torch.log_softmax(logits / 0.5, -1))


def test_weight_entropy():
    torch.testing.assert_close(weight_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]])), torch.tensor([0.6931472, 0.0]))


@pytest.mark.parametrize("kwargs, field", [({"k": 0}, "k=0"), ({"temperature": 0.0}, "temperature=0.0"), ({"likelihood": "x"}, "likelihood")])
def test_invalid_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TopK(**kwargs)


def test_each_rule_defaults_to_the_likelihood_its_paper_trains_with():
    """MoT-G's "different tokens" runs train Sampled with the weighted likelihood; its Dirichlet
    runs with the representative token's."""
    assert Sampled().likelihood == "weighted"
    assert Dirichlet().likelihood == "representative"


def test_dirichlet_weights_follow_the_dirichlet_where_gamma_draws_underflow():
    """At α q = 0.025 most Gamma draws are below the smallest float; drawn in log space the
    weights still follow Dirichlet(0.025, 0.025) (float64 reference) instead of collapsing to
    (0.5, 0.5) when both underflow."""
    torch.manual_seed(0)
    log_probs = torch.log(torch.tensor([0.5, 0.5])).expand(100_000, 2)
    weights = Dirichlet(k=2, alpha=0.05).choose(log_probs, EMBEDDING).weights[:, 0]
    reference = torch.distributions.Dirichlet(torch.tensor([0.025, 0.025], dtype=torch.float64)).sample((100_000,))[:, 0]
    assert (weights == 0.5).sum() == 0
    middle = lambda w: ((w > 0.4) & (w < 0.6)).double().mean()  # noqa: E731
    assert abs(middle(weights) - middle(reference)) < 0.003


def test_a_rule_that_lists_the_density_likelihood_must_implement_it():
    from motg_lightning.rules.base import MixtureRule

    with pytest.raises(TypeError, match="lists 'density' in LIKELIHOODS but does not implement density_log_likelihood"):
        type("NoDensity", (MixtureRule,), {"LIKELIHOODS": ("representative", "density"), "choose": lambda self, lp, e: None})

import pytest
import torch

from motg_lightning.rules.filters import SamplingFilter, validate_filters


def test_top_p_keeps_the_smallest_nucleus_and_renormalises():
    log_probs = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]]))
    kept = SamplingFilter(top_p=0.7).apply(log_probs).exp()
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.625, 0.375, 0.0]]))


def test_min_p_keeps_tokens_near_the_most_probable():
    log_probs = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]]))
    kept = SamplingFilter(min_p=0.5).apply(log_probs).exp()  # threshold 0.25
    torch.testing.assert_close(kept, torch.tensor([[0.0, 0.625, 0.375, 0.0]]))
    both = SamplingFilter(top_p=0.4, min_p=0.1).apply(log_probs).exp()
    torch.testing.assert_close(both, torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_no_filter_returns_the_input_and_the_top_token_always_survives():
    log_probs = torch.log_softmax(torch.randn(3, 9), -1)
    assert SamplingFilter().apply(log_probs) is log_probs
    tight = SamplingFilter(top_p=1e-6, min_p=0.999).apply(log_probs)
    assert torch.equal(tight.argmax(-1), log_probs.argmax(-1))
    torch.testing.assert_close(tight.exp().sum(-1), torch.ones(3))


@pytest.mark.parametrize("top_p, min_p, field", [(0.0, None, "top_p"), (1.5, None, "top_p"), (1.0, 1.0, "min_p"), (1.0, -0.1, "min_p")])
def test_invalid_filters_name_the_field(top_p, min_p, field):
    with pytest.raises(ValueError, match=f"model.{field}"):
        validate_filters(top_p, min_p)

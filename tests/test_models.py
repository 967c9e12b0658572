import torch

from motg_lightning.models import TINY_MODEL, load_causal_lm, load_tokenizer


def test_tiny_model_is_deterministic_and_shares_the_tokenizer():
    tokenizer = load_tokenizer(TINY_MODEL)
    first, second = load_causal_lm(TINY_MODEL, seed=3), load_causal_lm(TINY_MODEL, seed=3)
    assert first.config.vocab_size == len(tokenizer)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert tokenizer.chat_template and tokenizer.pad_token is not None


def test_dtype_and_gradient_checkpointing():
    model = load_causal_lm(TINY_MODEL, dtype="bfloat16", gradient_checkpointing=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing


def test_unknown_embedded_name_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="only embedded model"):
        load_tokenizer("embedded:SmolLM3")

import torch

from motg_lightning.models import PAPER_SCALE_MODEL, TINY_MODEL, load_causal_lm, load_tokenizer, random_model_config


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


def test_the_paper_scale_model_has_qwen25_15b_architecture_and_a_tokenizer_for_every_id():
    """random:Qwen2.5-1.5B-Instruct, for speed and memory at the paper's scale without a download:
    Qwen2.5-1.5B-Instruct's published config, and every id the model can emit decodes."""
    from transformers import Qwen2ForCausalLM

    config = random_model_config(PAPER_SCALE_MODEL)
    published = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                     intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True)
    assert {name: getattr(config, name) for name in published} == published
    assert config.rope_parameters["rope_theta"] == 1e6
    with torch.device("meta"):  # the shapes alone: 1.54 B parameters, as the published model
        model = Qwen2ForCausalLM(config)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == 1.54
    tokenizer = load_tokenizer(PAPER_SCALE_MODEL)
    assert len(tokenizer) == config.vocab_size and tokenizer.chat_template
    assert tokenizer.decode([config.vocab_size - 1]) and tokenizer.decode([len(load_tokenizer(TINY_MODEL))])

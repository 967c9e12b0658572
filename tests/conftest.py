"""Shared fixtures: the tiny random model with the embedded tokenizer (no downloads)."""

import dataclasses

import pytest
import torch

from motg_lightning.models import TINY_MODEL, load_causal_lm, load_tokenizer
from motg_lightning.lightning.options import RolloutOptions


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_model():
    return load_causal_lm(TINY_MODEL)


def build_settings(tokenizer, max_new_tokens=16, thinking_budget=None, force_answer_on_eos=False, stop=("</answer>",)):
    options = RolloutOptions(max_new_tokens=max_new_tokens, thinking_budget=thinking_budget,
                             force_answer_on_eos=force_answer_on_eos, stop_strings=list(stop), sync_every=4)
    settings = options.settings(tokenizer, eos_ids=[tokenizer.eos_token_id])
    # the forced ids even when nothing forces yet, so a test can switch forcing on with dataclasses.replace
    forced = tokenizer.encode(options.forced_answer, add_special_tokens=False)
    return dataclasses.replace(settings, forced_ids=torch.tensor(forced, dtype=torch.long))


@pytest.fixture
def make_settings(tokenizer):
    """``make_settings(max_new_tokens=..., thinking_budget=..., ...)`` for the tiny model's tokenizer."""
    return lambda **options: build_settings(tokenizer, **options)


@pytest.fixture
def prompts(tokenizer):
    """Two left-padded chat prompts of different lengths, each repeated for a group of 3."""
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True) + "<think>\n"
        for q in ("Calculate 2 + 3.", "What is seven times eight? Explain.")
    ]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return encoded.input_ids.repeat_interleave(3, 0), encoded.attention_mask.repeat_interleave(3, 0)

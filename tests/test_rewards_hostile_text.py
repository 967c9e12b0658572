"""Property-based tests: answer extraction and scoring never fail on any text a model can write."""

import math

import reasoning_gym
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from motg_lightning.rewards.scoring import RewardFunction, format_reward, xml_count_reward

ENTRY = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=3)[0]
REWARD = RewardFunction(preset="paper")
TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<answer", "answer>", "<", ">", "\n", " ", ENTRY["answer"]]

tag_soup = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=8)), max_size=40).map("".join)
raw_bytes = st.binary(max_size=200).map(lambda data: data.decode("utf-8", errors="surrogateescape"))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), tag_soup, raw_bytes))
def test_any_text_scores_within_range(text):
    out = REWARD([text], [ENTRY])
    assert out.reward_errors == 0
    assert 0.0 <= float(out.terms["correctness"][0]) <= 1.0
    assert float(out.terms["format"][0]) in (0.0, 1.0)
    assert out.total.isfinite().all()


@settings(max_examples=200, deadline=None)
@given(tag_soup, tag_soup)
def test_the_last_closed_answer_block_decides_correctness(before, noise):
    text = f"{before}</think><answer>{ENTRY['answer']}</answer>"
    assert bool(REWARD([text], [ENTRY]).correct[0])
    assert format_reward(text) == 1.0
    if "<answer>" not in noise and "</answer>" not in noise:
        assert not bool(REWARD([f"<answer>{ENTRY['answer']}</answer>{noise}<answer>wrong{noise}</answer>"], [ENTRY]).correct[0])


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=10_000, max_value=200_000))
def test_very_long_outputs_are_scored(length):
    text = "x" * length + f"</think><answer>{ENTRY['answer']}</answer>" + "<answer>" * 50
    out = REWARD([text], [ENTRY])
    assert out.reward_errors == 0 and xml_count_reward(text) <= 0.375


def _is_finite_number(value) -> bool:
    """Whether ``value`` is a number that stays finite as a float32."""
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= torch.finfo(torch.float32).max
    except (TypeError, ValueError, OverflowError):
        return False


hostile_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=6),
                           st.integers(min_value=-10**400, max_value=10**400), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile_values, min_size=3, max_size=3))
def test_any_values_a_reward_function_returns_give_finite_rewards(values):
    reward = RewardFunction(weights={"correctness": 0.0, "format": 0.0}, reward_funcs={"mine": lambda completions, **_: values})
    out = reward(["a", "b", "c"], [ENTRY] * 3)
    assert torch.isfinite(out.total).all()
    assert out.reward_errors == sum(value is not None and not _is_finite_number(value) for value in values)

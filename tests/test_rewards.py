import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import reasoning_gym
import torch
from reasoning_gym.composite import DatasetSpec

from motg_lightning.rewards.scoring import RewardFunction, format_reward, length_reward, xml_count_reward

ENTRY = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=3)[0]


def completion(answer: str) -> str:
    return f"let me add</think>\n<answer>{answer}</answer>"


def test_correctness_scores_the_last_answer_block():
    reward = RewardFunction(weights={"correctness": 1.0, "format": 0.0})
    wrong_then_right = f"<answer>nonsense</answer> more</think><answer>{ENTRY['answer']}</answer>"
    out = reward([completion(ENTRY["answer"]), completion("nonsense"), wrong_then_right, "no tags"], [ENTRY] * 4)
    assert out.terms["correctness"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out.correct.tolist() == [True, False, True, False]


def test_total_is_the_weighted_sum_of_terms():
    out = RewardFunction(weights={"correctness": 2.0, "format": 0.5})([completion(ENTRY["answer"]), "no tags"], [ENTRY] * 2)
    torch.testing.assert_close(out.total, torch.tensor([2.5, 0.0]))


def test_composite_entries_are_scored_by_their_own_task():
    dataset = reasoning_gym.create_dataset("composite", size=20, seed=1, datasets=[
        DatasetSpec("basic_arithmetic", 1.0, {}), DatasetSpec("leg_counting", 1.0, {})])
    entries = [dataset[i] for i in range(20)]
    assert {e["metadata"]["source_dataset"] for e in entries} == {"basic_arithmetic", "leg_counting"}
    out = RewardFunction()([completion(e["answer"]) for e in entries], entries)
    assert out.correct.all()


def test_a_raising_scorer_scores_zero_and_is_counted(monkeypatch):
    reward = RewardFunction()

    def broken(answer, entry):
        raise RuntimeError("scorer bug")

    reward._scorers["basic_arithmetic"] = broken
    out = reward([completion("1"), completion("2")], [ENTRY, ENTRY])
    assert out.reward_errors == 2
    assert out.terms["correctness"].tolist() == [0.0, 0.0]
    assert out.terms["format"].tolist() == [1.0, 1.0]


def test_format_reward():
    assert format_reward("think</think>\n<answer>4</answer>\n") == 1.0
    assert format_reward("<answer>4</answer>") == 0.0
    assert format_reward("x</think><answer>4</answer> trailing words") == 0.0


def test_length_and_xml_count_terms():
    assert length_reward("word " * 250) == 1.0 and length_reward("word " * 10) == 0.0
    assert xml_count_reward("a</think><answer>1</answer>") == pytest.approx(0.375)
    assert xml_count_reward("a</think><answer>1</answer>xx") == pytest.approx(0.373)


def test_paper_preset_and_unknown_terms():
    assert RewardFunction(preset="paper").weights == {"correctness": 2.0, "format": 0.5, "length": 0.5, "xml_count": 1.0}
    with pytest.raises(ValueError, match="model.reward.weights: unknown terms \\['corectness'\\].*valid terms"):
        RewardFunction(weights={"corectness": 1.0})


def test_a_hanging_scorer_is_stopped_scores_zero_and_is_counted():
    reward = RewardFunction(scorer_timeout=0.2)
    reward._scorers["basic_arithmetic"] = lambda answer, entry: threading.Event().wait(60) or 1.0
    out = reward([completion("1")], [ENTRY])
    assert out.reward_errors == 1 and out.terms["correctness"].tolist() == [0.0]
    del reward._scorers["basic_arithmetic"]
    time.sleep(0.3)  # a timer left running would fire here
    assert reward([completion(ENTRY["answer"])], [ENTRY]).reward_errors == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "not a score"])
def test_a_scorer_returning_a_non_number_scores_zero_and_is_counted(value):
    reward = RewardFunction()
    reward._scorers["basic_arithmetic"] = lambda answer, entry: value
    out = reward([completion("1")], [ENTRY])
    assert out.reward_errors == 1 and out.terms["correctness"].tolist() == [0.0] and torch.isfinite(out.total).all()


def test_a_hanging_scorer_is_stopped_off_the_main_thread_too():
    reward = RewardFunction(scorer_timeout=0.2)
    reward._scorers["basic_arithmetic"] = lambda answer, entry: threading.Event().wait(60) or 1.0
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(reward, [completion("1")], [ENTRY]).result(timeout=30)
    assert out.reward_errors == 1 and out.terms["correctness"].tolist() == [0.0]


def brevity(completions, **columns):
    """A TRL-style reward function: one score per completion, the entry's fields as columns."""
    assert columns["prompts"] == columns["question"] and len(columns["answer"]) == len(completions)
    return [1.0 / (1 + len(text)) for text in completions]


def test_reward_functions_of_your_own_are_weighted_terms():
    reward = RewardFunction(weights={"brevity": 2.0}, reward_funcs={"brevity": brevity, "twice": lambda completions, **_: [2.0] * len(completions)})
    out = reward([completion(ENTRY["answer"]), "x"], [ENTRY] * 2)
    assert reward.weights == {"correctness": 1.0, "format": 0.2, "brevity": 2.0, "twice": 1.0}
    torch.testing.assert_close(out.terms["brevity"], torch.tensor([1 / (1 + len(completion(ENTRY["answer"]))), 0.5]))
    torch.testing.assert_close(out.total, torch.tensor([1.2, 0.0]) + 2 * out.terms["brevity"] + 2.0)
    assert out.reward_errors == 0


def hanging(completions, **_):
    threading.Event().wait(60)
    return [1.0] * len(completions)


def raising(completions, **_):
    raise RuntimeError("bug in my reward")


@pytest.mark.parametrize("function, errors", [
    (raising, 3),
    (hanging, 3),
    (lambda completions, **_: [1.0], 3),  # wrong length
    (lambda completions, **_: [1.0, None, float("nan")], 1),  # None is "not applicable", NaN an error
    (lambda completions, **_: ["1.5", "not a number", 2], 1),
])
def test_a_failing_reward_function_scores_zero_and_is_counted(function, errors):
    reward = RewardFunction(weights={"correctness": 0.0, "format": 0.0}, scorer_timeout=0.2, reward_funcs={"mine": function})
    out = reward(["a", "b", "c"], [ENTRY] * 3)
    assert out.reward_errors == errors
    assert torch.isfinite(out.total).all() and set(out.terms["mine"].tolist()) <= {0.0, 1.0, 1.5, 2.0}


def test_a_reward_function_that_cannot_take_the_columns_is_refused_at_construction():
    with pytest.raises(ValueError, match="model.reward.reward_funcs\\[mine\\]: .*unexpected keyword.*declare .* \\*\\*kwargs"):
        RewardFunction(reward_funcs={"mine": lambda completions: [0.0] * len(completions)})
    with pytest.raises(ValueError, match="model.reward.reward_funcs\\[mine\\]: missing a required argument: 'solution'"):
        RewardFunction(reward_funcs={"mine": lambda completions, solution, **_: [0.0] * len(completions)})


def test_a_failing_reward_is_reported_once_and_counted_every_time(caplog):
    reward = RewardFunction(reward_funcs={"mine": raising})
    for _ in range(3):
        assert reward(["a", "b"], [ENTRY] * 2).reward_errors == 2
    assert caplog.text.count("Reward term mine failed (RuntimeError('bug in my reward'))") == 1


def test_reward_functions_may_not_shadow_built_in_terms():
    with pytest.raises(ValueError, match="model.reward.reward_funcs: \\['format'\\] are built-in terms"):
        RewardFunction(reward_funcs={"format": brevity})


def test_invalid_scorer_timeout_names_the_field():
    with pytest.raises(ValueError, match="model.reward.scorer_timeout=0"):
        RewardFunction(scorer_timeout=0)

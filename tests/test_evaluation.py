import pytest
import torch

from motg_lightning.evaluation.held_out import EvaluationMetrics, evaluation_rule
from motg_lightning.rules.paper import Dirichlet, Discrete, Greedy

from helpers import EMBEDDING, random_log_probs


def test_metrics_on_hand_numbers():
    metrics = EvaluationMetrics(samples=3)
    metrics.register(["a", "b"], torch.device("cpu"))
    correct = torch.tensor([[True, False, False], [False, False, False], [False, True, True]])
    formatted = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    lengths = torch.tensor([[4, 6, 8], [2, 2, 2], [10, 10, 10]])
    metrics.update(["a", "a", "b"], correct, formatted, lengths)
    values = {name: round(float(value), 4) for name, value in metrics.compute("val").items()}
    assert values["val/accuracy/a"] == 0.5 and values["val/accuracy/b"] == 0.0 and values["val/accuracy"] == round(1 / 3, 4)
    assert values["val/mean@3/a"] == round(1 / 6, 4) and values["val/mean@3/b"] == round(2 / 3, 4)
    assert values["val/pass@3/a"] == 0.5 and values["val/pass@3/b"] == 1.0 and values["val/pass@3"] == round(2 / 3, 4)
    assert values["val/format_rate/a"] == round(5 / 6, 4) and values["val/format_rate/b"] == 0.0
    assert values["val/completion_length/a"] == 4.0 and values["val/completion_length"] == round((6 + 2 + 10) / 3, 4)
    metrics.reset()
    assert metrics.compute("val") == {}


def test_decoding_choices():
    training = Dirichlet(k=2, temperature=0.7)
    assert evaluation_rule("mixture", training) is training
    sampled = evaluation_rule("sample", training)
    assert isinstance(sampled, Discrete) and sampled.temperature == 0.7
    assert isinstance(evaluation_rule("greedy", training), Greedy)
    with pytest.raises(ValueError, match="model.evaluation.decoding"):
        evaluation_rule("beam", training)


def test_greedy_takes_the_mode_in_both_phases():
    log_probs = random_log_probs()
    step = Greedy().choose(log_probs, EMBEDDING)
    assert torch.equal(step.token, log_probs.argmax(-1)) and Greedy.REPRESENTATIVE_IS_SAMPLE

"""The phase of a rollout's rows, driven step by step through its own methods, without a model:
budget forcing, forcing on EOS, the cold stop, ``</think>``, stop strings, EOS and finished rows."""

import dataclasses

import pytest
import torch

from motg_lightning.rollout.phase import Phase
from motg_lightning.rules.base import MixtureStep

K = 2


def mixture(drawn: torch.Tensor) -> MixtureStep:
    """A rule's step: the drawn token and the next id, half each, with a draw of its own."""
    rows = len(drawn)
    return MixtureStep(torch.stack([drawn, drawn + 1], -1), torch.full((rows, K), 0.5), drawn, {"noise": torch.ones(rows, 3)})


def run(phase: Phase, drawn: list[list[int]], entropy: list[float] | None = None):
    """Feed one column of ``drawn`` ids per step (the rule's token and the plain draw alike):
    ``(fed, taken, last)``, the inputs fed and the phases the steps were taken in, per step."""
    fed, taken = [], []
    for t, column in enumerate(drawn):
        token = torch.tensor(column)
        phase = phase.begin_forcing(token)
        taken.append(phase)
        fed.append(phase.next_input(mixture(token), token))
        phase = phase.update(fed[-1].token, torch.full((len(column),), entropy[t] if entropy else 1.0))
    return fed, taken, phase


def tokens(fed: list[MixtureStep]) -> list[list[int]]:
    """``[rows][steps]`` fed tokens."""
    return torch.stack([step.token for step in fed], 1).tolist()


def flags(taken: list[Phase], name: str) -> list[list[bool]]:
    """``[rows][steps]`` of a phase property (``mixing``, ``forcing``, ``thinking``, ``finished``)."""
    return torch.stack([getattr(phase, name) for phase in taken], 1).tolist()


@pytest.fixture
def word(tokenizer):
    """An id whose text holds no marker character."""
    return tokenizer.encode("hello", add_special_tokens=False)[0]


def test_budget_forcing_appends_the_forced_ids_once_the_budget_is_spent(make_settings, tokenizer, word):
    settings = make_settings(thinking_budget=2, stop=())
    forced = settings.forced_ids.tolist()
    steps = 2 + len(forced) + 2
    fed, taken, last = run(Phase.start(settings, 2, torch.device("cpu")), [[word, word]] * steps)
    for row in tokens(fed):
        assert row == [word, word, *forced, word, word]
    assert flags(taken, "mixing")[0] == [True, True] + [False] * (steps - 2)
    assert flags(taken, "forcing")[0] == [False, False] + [True] * len(forced) + [False, False]
    written = 2 + len(tokenizer.encode("</think>", add_special_tokens=False))  # the forced text writes </think>
    assert flags(taken, "thinking")[0] == [True] * written + [False] * (steps - written)
    assert last.think_steps.tolist() == [written] * 2 and not last.finished.any()
    no_marker = Phase.start(dataclasses.replace(settings, think_end=make_settings(stop=()).stop), 1, torch.device("cpu"))
    _, taken, _ = run(no_marker, [[word]] * steps)
    assert flags(taken, "thinking")[0] == [True] * (2 + len(forced)) + [False, False], "the last forced id ends thinking anyway"
    for step in fed[2:]:  # not mixing: the token alone, and none of the rule's draws
        assert (step.support == step.token[:, None]).all() and step.weights.tolist() == [[1.0, 0.0]] * 2
        assert (step.extras["noise"] == 0).all()
    assert (fed[0].weights == 0.5).all() and (fed[0].extras["noise"] == 1).all()


def test_an_eos_drawn_while_thinking_forces_the_answer_only_when_asked(make_settings, tokenizer, word):
    eos, forced = tokenizer.eos_token_id, make_settings().forced_ids.tolist()
    drawn = [[word, word], [eos, word]] + [[word, word]] * len(forced) + [[eos, word]]
    fed, taken, last = run(Phase.start(make_settings(force_answer_on_eos=True, stop=()), 2, torch.device("cpu")), drawn)
    assert tokens(fed)[0] == [word, *forced, word, eos], "an EOS in the answer still ends the sequence"
    assert flags(taken, "forcing")[0][1 : 1 + len(forced)] == [True] * len(forced)
    assert flags(taken, "mixing")[1] == [True] * len(drawn), "the other row keeps thinking"
    assert last.finished.tolist() == [True, False]
    fed, taken, last = run(Phase.start(make_settings(stop=()), 2, torch.device("cpu")), drawn)
    assert tokens(fed)[0] == [word, eos] + [make_settings().pad_id] * (len(drawn) - 2)
    assert not any(flags(taken, "forcing")[0]) and flags(taken, "finished")[0][2:] == [True] * (len(drawn) - 2)


def test_the_cold_stop_forces_after_a_run_of_confident_steps(make_settings, word):
    settings = dataclasses.replace(make_settings(stop=()), cold_stop_entropy=0.5, cold_stop_steps=3)
    forced = settings.forced_ids.tolist()
    entropy = [0.1, 0.1, 1.0, 0.1, 0.1, 0.1] + [0.0] * (len(forced) + 1)
    drawn = [[word]] * len(entropy)
    fed, taken, _ = run(Phase.start(settings, 1, torch.device("cpu")), drawn, entropy)
    assert tokens(fed)[0] == [word] * 6 + forced + [word], "the confident run broken at step 2 restarts; forcing at step 6"
    assert flags(taken, "mixing")[0] == [True] * 6 + [False] * (len(forced) + 1)
    never = Phase.start(dataclasses.replace(settings, cold_stop_entropy=None), 1, torch.device("cpu"))
    _, taken, _ = run(never, drawn, [0.0] * len(drawn))
    assert not any(flags(taken, "forcing")[0]), "without a threshold nothing stops cold"


def test_written_think_end_and_stop_strings_end_the_phase_and_the_row(make_settings, tokenizer, word):
    close = tokenizer.encode("</think>", add_special_tokens=False)
    answer_end = tokenizer.encode("</answer>", add_special_tokens=False)
    settings = make_settings()
    drawn = [[token, word] for token in [*close, word, *answer_end, *close, word]]
    fed, taken, last = run(Phase.start(settings, 2, torch.device("cpu")), drawn)
    end = len(close)
    assert flags(taken, "thinking")[0] == [True] * end + [False] * (len(drawn) - end)
    finished_at = end + 1 + len(answer_end)
    assert flags(taken, "finished")[0] == [False] * finished_at + [True] * (len(drawn) - finished_at)
    assert tokens(fed)[0] == [*close, word, *answer_end] + [settings.pad_id] * (len(drawn) - finished_at)
    assert flags(taken, "mixing")[1] == [True] * len(drawn) and not last.finished[1]
    stopped = Phase.start(settings, 2, torch.device("cpu"))
    _, _, at_stop = run(stopped, drawn[:finished_at])
    assert torch.equal(last.stop_state[0], at_stop.stop_state[0]) and torch.equal(last.think_state[0], at_stop.think_state[0])
    assert last.think_steps[0] == at_stop.think_steps[0] == end, "a finished row keeps its counts and marker states"


def test_with_no_forced_ids_nothing_is_forced_and_eos_ends_the_row(make_settings, tokenizer, word):
    settings = dataclasses.replace(
        make_settings(thinking_budget=0, force_answer_on_eos=True), forced_ids=torch.tensor([], dtype=torch.long),
        cold_stop_entropy=5.0, cold_stop_steps=1,
    )
    phase = Phase.start(settings, 2, torch.device("cpu"))
    assert phase.forced_ids is None
    fed, taken, last = run(phase, [[word, word], [tokenizer.eos_token_id, word], [word, word]])
    assert not any(any(row) for row in flags(taken, "forcing"))
    assert flags(taken, "mixing")[1] == [True] * 3 and last.finished.tolist() == [True, False]
    assert tokens(fed)[0] == [word, tokenizer.eos_token_id, settings.pad_id]


def test_a_phase_step_compiles_to_one_graph(make_settings, tokenizer, word):
    """No host sync and no Python branch on tensor values: ready for a compiled decode step."""
    settings = dataclasses.replace(make_settings(thinking_budget=1, force_answer_on_eos=True), cold_stop_entropy=0.5)

    def step(phase: Phase, drawn: torch.Tensor, entropy: torch.Tensor):
        phase = phase.begin_forcing(drawn)
        fed = phase.next_input(mixture(drawn), drawn)
        return fed.token, fed.weights, phase.update(fed.token, entropy)

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    eager_phase = compiled_phase = Phase.start(settings, 2, torch.device("cpu"))
    for column in ([word, word], [tokenizer.eos_token_id, word], [word, word]):
        drawn, entropy = torch.tensor(column), torch.tensor([0.1, 1.0])
        token, weights, eager_phase = step(eager_phase, drawn, entropy)
        compiled_token, compiled_weights, compiled_phase = compiled(compiled_phase, drawn, entropy)
        assert torch.equal(token, compiled_token) and torch.equal(weights, compiled_weights)
        assert torch.equal(eager_phase.force_at, compiled_phase.force_at) and torch.equal(eager_phase.thinking, compiled_phase.thinking)

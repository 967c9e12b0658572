"""The whole decode step compiled as one graph (:func:`motg_lightning.rollout.step.decode_step`):
every registered rule's choice and random draws, the phase switch, forcing, stop detection and the
record's writes at a tensor step index. A seed gives the trajectories of the eager step, and one
compilation serves every step, rollout and prompt length."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from motg_lightning.rollout.decoder import Decoder
from motg_lightning.rollout.generate import generate
from motg_lightning.rollout.record import Step, StepRecord
from motg_lightning.rollout.step import draw_shapes
from motg_lightning.rules import REGISTRY
from motg_lightning.rules.dense import Gaussian
from motg_lightning.rules.paper import Dirichlet, Discrete
from motg_lightning.rules.related import Gumbel

from helpers import carrying_rule_parameters


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Compiled frames of other tests count towards dynamo's limit of recompilations per function."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _rollout(model, rule, prompts, settings, decoder, seed=11):
    torch.manual_seed(seed)
    return generate(model, rule, *prompts, settings, decoder)


def _same_trajectories(eager, compiled):
    for name in ("tokens", "support", "thinking", "forced", "completion_mask", "truncated"):
        assert torch.equal(getattr(eager, name), getattr(compiled, name)), name
    for name in ("weights", "log_likelihood", "entropy", "weight_entropy"):
        torch.testing.assert_close(getattr(eager, name), getattr(compiled, name), atol=1e-4, rtol=1e-4, msg=name)
    assert eager.extras.keys() == compiled.extras.keys()
    for name, value in eager.extras.items():
        torch.testing.assert_close(value, compiled.extras[name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_rule_compiles_its_whole_step_to_one_graph_with_the_eager_trajectories(tiny_model, prompts, make_settings, name, backend):
    """``fullgraph=True``: a graph break would raise. The thinking budget makes rows force their
    answer mid-rollout, so the phase switch and forcing run inside the graph too."""
    settings = make_settings(max_new_tokens=9, thinking_budget=3)
    # HRPO's default top 50 of the nearly uniform random model holds near-ties, which inductor's
    # kernels may order differently in its last places: its top 8 are apart
    rule = REGISTRY[name].rule(**({"k": 8} if name == "hrpo" else {}))
    tiny_model = carrying_rule_parameters(tiny_model, rule)
    eager = _rollout(tiny_model, rule, prompts, settings, Decoder())
    compiled = _rollout(tiny_model, rule, prompts, settings, Decoder(compile_mode="default", compile_backend=backend))
    assert eager.thinking.any() and eager.forced.any()
    _same_trajectories(eager, compiled)


@pytest.mark.parametrize("rule", [Dirichlet(), Gaussian(k=4)], ids=lambda r: type(r).__name__)
def test_one_compilation_serves_successive_rollouts_a_shorter_prompt_and_new_weights(tiny_model, prompts, make_settings, rule):
    """One frame: every step replays it (the step index is a tensor), the next rollout too, a
    prompt two tokens shorter (the cache length is rounded up to 64), and a rollout after an
    optimizer step changed the embedding's version (Gaussian's σ is measured outside the graph)."""
    counter = CompileCounter()
    decoder = Decoder(compile_mode="default", compile_backend=counter)
    settings = make_settings(max_new_tokens=6, thinking_budget=2)
    ids, mask = prompts
    shorter = (ids[:, 2:], mask[:, 2:])
    first = _rollout(tiny_model, rule, prompts, settings, decoder)
    record = decoder.kept_record
    again = _rollout(tiny_model, rule, prompts, settings, decoder, seed=12)
    weight = tiny_model.get_input_embeddings().weight
    with torch.no_grad():
        weight.mul_(1.0)  # a new version of the same values, as after an optimizer step
    short = _rollout(tiny_model, rule, shorter, settings, decoder)
    assert counter.frame_count == 1
    assert decoder.kept_record is record, "the record's buffers are kept (and cleared) like the cache"
    _same_trajectories(_rollout(tiny_model, rule, prompts, settings, Decoder()), first)  # copied out of the kept record
    _same_trajectories(_rollout(tiny_model, rule, prompts, settings, Decoder(), seed=12), again)
    _same_trajectories(_rollout(tiny_model, rule, shorter, settings, Decoder()), short)


def test_the_record_of_a_rules_draws_exists_before_the_first_step(tiny_model):
    """Found on the meta device: shapes only, and no random number is drawn."""
    embedding = tiny_model.get_input_embeddings()
    vocabulary, width = embedding.weight.shape
    state = torch.get_rng_state()
    assert draw_shapes(Discrete(), embedding, 6, vocabulary) == {}
    assert draw_shapes(Gumbel(k=3), embedding, 6, vocabulary) == {"perturbed": (torch.Size([3]), torch.float32)}
    assert draw_shapes(Gaussian(k=4), embedding, 6, vocabulary) == {
        "noise": (torch.Size([width]), torch.float32), "sigma": (torch.Size([]), torch.float32),
    }
    assert torch.equal(torch.get_rng_state(), state)
    record = StepRecord.empty(6, 5, 3, 0, torch.device("cpu"), draw_shapes(Gumbel(k=3), embedding, 6, vocabulary))
    assert record.extras["perturbed"].shape == (6, 5, 3)


def test_a_tensor_step_index_writes_where_an_integer_one_does():
    rows, k = 2, 3
    step = Step(
        chosen=Gumbel(k=k).choose(torch.log_softmax(torch.randn(rows, 10), -1), torch.nn.Embedding(10, 4)),
        mixing=torch.tensor([True, False]), forced=torch.tensor([False, True]), active=torch.tensor([True, True]),
        log_likelihood=torch.randn(rows), entropy=torch.rand(rows),
    )
    shapes = {"perturbed": (torch.Size([k]), torch.float32)}
    by_int, by_tensor = (StepRecord.empty(rows, 4, k, 0, torch.device("cpu"), shapes) for _ in range(2))
    by_int.write(2, step)
    by_tensor.write(torch.tensor(2), step)
    for name, value in by_int.buffers.items():
        assert torch.equal(value, by_tensor.buffers[name]), name
    assert torch.equal(by_int.extras["perturbed"], by_tensor.extras["perturbed"])
    with pytest.raises(KeyError, match="perturbed"):
        StepRecord.empty(rows, 4, k, 0, torch.device("cpu")).write(0, step)

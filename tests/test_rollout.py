import pytest
import torch

from motg_lightning.rules.paper import Dirichlet, Discrete, ElementwiseMax, Nucleus, Sampled, TopK
from motg_lightning.rollout.decoder import prompt_positions
from motg_lightning.rules.related import Gumbel
from motg_lightning.rules.dense import Gaussian
from motg_lightning.rollout.generate import generate

RULES = [Discrete(), TopK(), Dirichlet(), Sampled(likelihood="weighted"), Nucleus(k=3), ElementwiseMax()]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: type(r).__name__)
def test_rollout_records_every_step(tiny_model, tokenizer, prompts, rule, make_settings):
    torch.manual_seed(0)
    ids, mask = prompts
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=10))
    n, steps = rollout.tokens.shape
    assert n == 6 and steps == 10
    assert rollout.support.shape == rollout.weights.shape == (6, 10, rule.k)
    torch.testing.assert_close(rollout.weights.sum(-1), torch.ones(6, 10))
    in_support = (rollout.support == rollout.tokens.unsqueeze(-1)) & (rollout.weights > 0)
    assert in_support.any(-1)[rollout.completion_mask].all()
    assert rollout.thinking.all(), "a random model never writes </think> in 10 steps"
    assert rollout.truncated.all()


def test_budget_forcing_appends_the_answer_prefix_and_ends_thinking(tiny_model, tokenizer, prompts, make_settings):
    torch.manual_seed(0)
    ids, mask = prompts
    settings = make_settings(max_new_tokens=16, thinking_budget=3, stop=())
    rollout = generate(tiny_model, Dirichlet(), ids, mask, settings)
    forced = settings.forced_ids
    for row in range(6):
        assert rollout.thinking[row, :3].all() and not rollout.thinking[row, 3:].any()
        assert rollout.forced[row, 3 : 3 + len(forced)].all()
        assert rollout.tokens[row, 3 : 3 + len(forced)].tolist() == forced.tolist()
        assert not rollout.forced[row, 3 + len(forced):].any()
    assert not rollout.loss_mask[:, 3 : 3 + len(forced)].any()


class _ScriptedModel(torch.nn.Module):
    """Wraps a model and makes one token overwhelmingly likely at chosen steps."""

    def __init__(self, model, schedule):
        super().__init__()
        self.model, self.schedule, self.calls = model, schedule, 0
        self.config, self.generation_config = model.config, model.generation_config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, **kwargs):
        output = self.model(**kwargs)
        token = self.schedule.get(self.calls)
        self.calls += 1
        if token is not None:
            output.logits[..., token] += 1e4
        return output


def test_eos_stops_a_sequence_and_masks_the_rest(tiny_model, tokenizer, prompts, make_settings):
    ids, mask = prompts
    scripted = _ScriptedModel(tiny_model, {2: tokenizer.eos_token_id})
    rollout = generate(scripted, Discrete(), ids, mask, make_settings(max_new_tokens=8))
    assert rollout.tokens.shape[1] == 4, "every row stopped at step 3, seen at the next sync"
    assert (rollout.tokens[:, 2] == tokenizer.eos_token_id).all()
    assert rollout.completion_mask[:, :3].all() and not rollout.completion_mask[:, 3:].any()
    assert not rollout.truncated.any()


def test_eos_while_thinking_forces_the_answer_when_asked(tiny_model, tokenizer, prompts, make_settings):
    ids, mask = prompts
    scripted = _ScriptedModel(tiny_model, {2: tokenizer.eos_token_id})
    settings = make_settings(max_new_tokens=12, force_answer_on_eos=True, stop=())
    rollout = generate(scripted, Dirichlet(), ids, mask, settings)
    forced = settings.forced_ids.tolist()
    assert all(row[2 : 2 + len(forced)] == forced for row in rollout.tokens.tolist())
    assert not rollout.thinking[:, 2:].any()


def test_written_think_end_switches_to_discrete_answers(tiny_model, tokenizer, prompts, make_settings):
    ids, mask = prompts
    close = tokenizer.encode("</think>", add_special_tokens=False)
    scripted = _ScriptedModel(tiny_model, {1 + i: token for i, token in enumerate(close)})
    rollout = generate(scripted, TopK(k=2), ids, mask, make_settings(max_new_tokens=8))
    end = 1 + len(close)
    assert rollout.thinking[:, :end].all() and not rollout.thinking[:, end:].any()
    assert (rollout.weights[:, end:, 1] == 0).all(), "answer steps are one token"


def test_input_embeddings_rebuild_prompt_and_steps(tiny_model, tokenizer, prompts, make_settings):
    torch.manual_seed(0)
    ids, mask = prompts
    rule = TopK(k=2)
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=5))
    embedding = tiny_model.get_input_embeddings()
    rebuilt = rollout.input_embeddings(embedding, rule)
    assert rebuilt.shape == (6, ids.shape[1] + 4, tiny_model.config.hidden_size)
    torch.testing.assert_close(rebuilt[:, : ids.shape[1]], embedding(ids))
    step = rollout.weights[0, 0, 0] * embedding.weight[rollout.support[0, 0, 0]] + rollout.weights[0, 0, 1] * embedding.weight[rollout.support[0, 0, 1]]
    torch.testing.assert_close(rebuilt[0, ids.shape[1]], step)


@pytest.mark.parametrize(("rule", "detached"), [
    (Dirichlet(likelihood="representative"), False), (Dirichlet(likelihood="density"), False),
    (Gumbel(k=3), True), (Gumbel(k=3, likelihood="representative"), False), (Gaussian(k=3), True),
], ids=lambda value: f"{type(value).__name__}-{value.likelihood}" if hasattr(value, "likelihood") else str(value))
def test_mixed_inputs_carry_gradient_unless_the_rule_treats_them_as_data(tiny_model, prompts, make_settings, rule, detached):
    """Gaussian's input is its sample, and SofT-GRPO detaches Gumbel's: no gradient reaches the
    embedding matrix through those mixed inputs. Given the recorded weights, a Dirichlet input is
    a function of the embedding matrix, and keeps that path even with the density likelihood
    (the exact score function). Answer-phase token inputs always keep it."""
    torch.manual_seed(0)
    ids, mask = prompts
    rollout = generate(tiny_model, rule, ids, mask, make_settings(max_new_tokens=8, thinking_budget=3))
    embedding = tiny_model.get_input_embeddings()
    steps = rollout.input_embeddings(embedding, rule)[:, ids.shape[1] :]
    thinking = rollout.thinking[:, :-1]
    assert thinking.any() and (~thinking).any()
    mixed_grad = torch.autograd.grad(steps[thinking].sum(), embedding.weight, retain_graph=True)[0]
    token_grad = torch.autograd.grad(steps[~thinking].sum(), embedding.weight)[0]
    assert token_grad.abs().sum() > 0
    assert (mixed_grad.abs().sum() == 0) == detached


@pytest.mark.parametrize("rule", [Discrete(), Dirichlet(), Sampled()], ids=lambda r: type(r).__name__)
def test_fast_path_gives_the_same_trajectories_as_the_plain_path(tiny_model, tokenizer, prompts, make_settings, rule):
    """Static cache and rare host syncs never change what is generated for a seed."""
    import dataclasses

    ids, mask = prompts
    fast = make_settings(max_new_tokens=12, thinking_budget=4)
    plain = dataclasses.replace(fast, static_cache=False, sync_every=1)
    runs = []
    for settings in (fast, plain):
        torch.manual_seed(3)
        runs.append(generate(tiny_model, rule, ids, mask, settings))
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert torch.equal(runs[0].support, runs[1].support)
    torch.testing.assert_close(runs[0].weights, runs[1].weights)
    torch.testing.assert_close(runs[0].log_likelihood, runs[1].log_likelihood, atol=1e-5, rtol=1e-5)


def test_each_distinct_prompt_is_prefilled_once(tiny_model, prompts, make_settings):
    ids, mask = prompts  # two prompts, three copies each
    batch_sizes = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args, kwargs: batch_sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        rollout = generate(tiny_model, Discrete(), ids, mask, make_settings(max_new_tokens=3))
    finally:
        hook.remove()
    assert batch_sizes == [2, 6, 6]
    assert rollout.tokens.shape == (6, 3)


def test_cold_stop_forces_the_answer_after_a_run_of_confident_steps(tiny_model, tokenizer, prompts, make_settings):
    import dataclasses

    ids, mask = prompts
    confident = {step: 42 for step in range(3)}  # steps 0-2 put all mass on one token: entropy ~ 0
    scripted = _ScriptedModel(tiny_model, confident)
    settings = dataclasses.replace(make_settings(max_new_tokens=14, stop=()), cold_stop_entropy=0.01, cold_stop_steps=3)
    rollout = generate(scripted, Dirichlet(), ids, mask, settings)
    forced = settings.forced_ids.tolist()
    assert all(row[3 : 3 + len(forced)] == forced for row in rollout.tokens.tolist()), "steps 0-2 confident, forcing from step 3"
    assert rollout.thinking[:, :3].all() and not rollout.thinking[:, 3:].any()
    unchanged = generate(_ScriptedModel(tiny_model, confident), Dirichlet(), ids, mask, make_settings(max_new_tokens=14, stop=()))
    assert not unchanged.forced.any(), "without a cold-stop threshold nothing is forced"


def test_concatenated_rollouts_keep_every_row_and_its_likelihood(tiny_model, tokenizer, prompts, make_settings):
    from motg_lightning.grpo.likelihood import trajectory_log_likelihood
    from motg_lightning.rollout.record import concatenate

    ids, mask = prompts
    torch.manual_seed(0)
    rule = Dirichlet()
    short = generate(tiny_model, rule, ids[:3, 4:], mask[:3, 4:], make_settings(max_new_tokens=5))
    long = generate(tiny_model, rule, ids[3:], mask[3:], make_settings(max_new_tokens=9))
    both = concatenate([short, long])
    assert both.tokens.shape == (6, 9) and both.prompt_ids.shape == (6, ids.shape[1])
    assert torch.equal(both.completion_mask[:3, :5], short.completion_mask) and not both.completion_mask[:3, 5:].any()
    recomputed = trajectory_log_likelihood(tiny_model, rule, both)
    expected = torch.cat([short.log_likelihood[short.completion_mask], long.log_likelihood[long.completion_mask]])
    torch.testing.assert_close(recomputed[both.completion_mask], expected, atol=1e-4, rtol=1e-4)


def test_filters_shape_sampling_and_the_recorded_likelihood(tiny_model, prompts, make_settings):
    """A top-p filter this tight leaves only the mode: drawn with probability 1, it is recorded
    with log-likelihood 0, though the whole distribution gives it less."""
    import dataclasses

    ids, mask = prompts
    settings = dataclasses.replace(make_settings(max_new_tokens=6), top_p=1e-6)
    torch.manual_seed(0)
    rollout = generate(tiny_model, Sampled(k=2), ids, mask, settings)
    with torch.no_grad():
        first = Sampled().log_probs(tiny_model(input_ids=ids, attention_mask=mask, position_ids=prompt_positions(mask)).logits[:, -1])
    assert torch.equal(rollout.tokens[:, 0], first.argmax(-1))
    torch.testing.assert_close(rollout.log_likelihood[:, 0], torch.zeros(len(ids)), atol=1e-5, rtol=1e-5)
    assert (first.max(-1).values < -1e-3).all()


def test_rule_draws_are_zero_on_steps_that_did_not_mix(tiny_model, prompts, make_settings):
    from motg_lightning.rules.dense import Gaussian

    ids, mask = prompts
    torch.manual_seed(0)
    rollout = generate(tiny_model, Gaussian(k=3), ids, mask, make_settings(max_new_tokens=10, thinking_budget=3))
    noise = rollout.extras["noise"]
    assert (noise[~rollout.thinking] == 0).all()
    assert (noise[rollout.thinking].abs().sum(-1) > 0).all()

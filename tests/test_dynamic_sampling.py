import pytest
import torch

from motg_lightning.grpo.dynamic_sampling import RefillPrompts, dynamic_sample
from motg_lightning.grpo.scored import ScoredRollout
from motg_lightning.rewards.scoring import RewardOutput
from motg_lightning.rollout.record import Rollout


def fake_rollout(rows: int, steps: int, tag: int) -> Rollout:
    zeros = torch.zeros(rows, steps)
    return Rollout(
        prompt_ids=torch.full((rows, 3), tag), prompt_mask=torch.ones(rows, 3, dtype=torch.bool),
        tokens=torch.full((rows, steps), tag), support=torch.full((rows, steps, 1), tag), weights=torch.ones(rows, steps, 1),
        thinking=torch.zeros(rows, steps, dtype=torch.bool), forced=torch.zeros(rows, steps, dtype=torch.bool),
        completion_mask=torch.ones(rows, steps, dtype=torch.bool), truncated=torch.zeros(rows, dtype=torch.bool),
        log_likelihood=zeros, entropy=zeros, weight_entropy=zeros,
    )


def scripted(rewards_per_round):
    """roll_out() returning, round after round, the given group rewards (2 groups of 2)."""
    calls = []

    def roll_out(batch):
        total = torch.tensor(rewards_per_round[len(calls)], dtype=torch.float32)
        tag = len(calls)
        calls.append(batch)
        output = RewardOutput(total, {"correctness": total}, total == 1.0, reward_errors=1)
        return ScoredRollout(fake_rollout(4, 2 + tag, tag), [f"c{tag}{i}" for i in range(4)], [{"round": tag}] * 4, output, 1.5)

    return roll_out, calls


BATCH = {"prompt_ids": torch.zeros(2, 3)}


def test_groups_without_variance_are_replaced_from_further_batches():
    roll_out, calls = scripted([[1, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1]])
    scored = dynamic_sample(BATCH, roll_out, lambda: {"extra": True}, 2, 5)
    rollout, completions, entries, rewards, seconds, rounds = (
        scored.rollout, scored.completions, scored.entries, scored.rewards, scored.seconds, scored.rounds)
    assert rounds == 3 and seconds == 4.5 and calls[1:] == [{"extra": True}] * 2
    assert rewards.total.tolist() == [0.0, 1.0, 0.0, 1.0], "second group of round 0, first group of round 2"
    assert completions == ["c02", "c03", "c20", "c21"] and [e["round"] for e in entries] == [0, 0, 2, 2]
    assert rollout.tokens.shape == (4, 4) and rollout.tokens[:2, :2].eq(0).all() and rollout.tokens[2:].eq(2).all()
    assert not rollout.completion_mask[:2, 2:].any(), "the shorter round's rows are padded outside the completion"
    tasks, correct = scored.outcomes
    assert correct.tolist() == [r == 1 for r in [1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1]] and len(tasks) == 12, (
        "the training accuracy counts every completion rolled out, the dropped all-right and all-wrong groups too")


def test_rounds_are_bounded_and_a_batch_without_signal_is_returned_as_it_is():
    roll_out, calls = scripted([[1, 1, 0, 0], [1, 1, 1, 1]])
    scored = dynamic_sample(BATCH, roll_out, lambda: {}, 2, 2)
    completions, rewards, rounds = scored.completions, scored.rewards, scored.rounds
    assert rounds == 2 and len(calls) == 2
    assert completions == ["c00", "c01", "c02", "c03"] and rewards.total.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert scored.outcomes[1].tolist() == [True, True, False, False, True, True, True, True]


def test_a_full_first_batch_needs_no_more_rollouts():
    roll_out, calls = scripted([[0, 1, 1, 0]])
    rounds = dynamic_sample(BATCH, roll_out, lambda: {}, 2, 3).rounds
    assert rounds == 1 and len(calls) == 1


def test_a_full_rank_keeps_rolling_out_while_another_needs_more_and_ignores_the_extra_groups():
    """Distributed: ``agree`` says another rank still needs a round; this rank's result stays the same."""
    roll_out, calls = scripted([[0, 1, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    others_need_more = iter([True, True, False])
    scored = dynamic_sample(BATCH, roll_out, lambda: {}, 2, 5, agree=lambda mine: mine or next(others_need_more))
    completions, rewards, rounds = scored.completions, scored.rewards, scored.rounds
    assert rounds == 3 and len(calls) == 3
    assert completions == ["c00", "c01", "c02", "c03"] and rewards.total.tolist() == [0.0, 1.0, 1.0, 0.0]


def numbers_loader(count=10, batch_size=3, seed=7):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(list(range(count)), batch_size=batch_size, shuffle=True, generator=generator)


def draw(refill, batches):
    return [refill.next_batch().tolist() for _ in range(batches)]


def test_refill_prompts_pass_over_the_data_without_end_in_an_order_of_their_own():
    loader = numbers_loader()
    refill = RefillPrompts(loader)
    first_pass, second_pass = draw(refill, 4), draw(refill, 4)
    for one_pass in (first_pass, second_pass):
        assert sorted(n for batch in one_pass for n in batch) == list(range(10))
    assert first_pass != second_pass, "each pass is shuffled anew"
    assert first_pass != [batch.tolist() for batch in loader], "not the order the training steps will use"
    assert refill.passes == 1


@pytest.mark.parametrize("drawn", [0, 2, 4, 5, 9], ids=lambda n: f"{n} batches drawn")
def test_refill_prompts_resume_where_the_state_was_saved(drawn):
    """Mid-pass, at a pass boundary and in a later pass, a restored source draws what the original would."""
    original = RefillPrompts(numbers_loader())
    draw(original, drawn)
    state = original.state_dict()
    restored = RefillPrompts(numbers_loader())
    restored.load_state_dict(state)
    assert draw(restored, 6) == draw(original, 6)


def test_refill_prompts_of_two_ranks_are_disjoint_shares():
    shares = []
    for rank in (0, 1):
        refill = RefillPrompts(numbers_loader(count=12), distributed={"num_replicas": 2, "rank": rank})
        shares.append([n for batch in draw(refill, 2) for n in batch])
    assert sorted(shares[0] + shares[1]) == list(range(12))

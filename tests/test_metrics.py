import torch

from motg_lightning.evaluation.training_metrics import completions_markdown, masked_mean, rollout_metrics
from motg_lightning.rewards.scoring import RewardOutput
from motg_lightning.rollout.record import Rollout


def hand_rollout() -> Rollout:
    completion = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    thinking = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]).bool()
    zeros = torch.zeros(4, 4)
    return Rollout(
        prompt_ids=torch.zeros(4, 2, dtype=torch.long), prompt_mask=torch.ones(4, 2, dtype=torch.bool),
        tokens=torch.zeros(4, 4, dtype=torch.long), support=torch.zeros(4, 4, 2, dtype=torch.long), weights=torch.zeros(4, 4, 2),
        thinking=thinking, forced=torch.zeros(4, 4, dtype=torch.bool), completion_mask=completion,
        truncated=torch.tensor([False, False, True, False]), log_likelihood=zeros,
        entropy=torch.full((4, 4), 2.0), weight_entropy=torch.where(thinking, 0.5, 9.0),
    )


def test_rollout_metrics_on_hand_numbers():
    rewards = RewardOutput(total=torch.tensor([1.0, 1.0, 0.0, 1.0]), terms={"format": torch.tensor([1.0, 1.0, 0.0, 1.0])},
                           correct=torch.tensor([True, False, False, True]), reward_errors=2)
    stats = rollout_metrics(hand_rollout(), rewards, group_size=2, seconds=2.0)
    assert stats["zero_variance_groups"] == 0.5
    assert stats["accuracy"] == 0.5 and stats["reward_errors"] == 2.0
    assert stats["completion_length/mean"] == 2.5 and stats["completion_length/max"] == 4
    assert stats["truncated_fraction"] == 0.25
    assert stats["thinking_length"] == 1.5
    assert stats["mixture_weight_entropy"] == 0.5, "weight entropy is averaged over thinking steps only"
    assert stats["rollout_tokens_per_s"] == 10 / 2.0
    assert stats["rollout_seconds"] == 2.0
    assert stats["rewards/format/mean"] == 0.75


def test_masked_mean_of_an_empty_mask_is_zero():
    assert masked_mean(torch.ones(3), torch.zeros(3, dtype=torch.bool)) == 0


def test_completions_markdown_escapes_table_cells():
    text = completions_markdown(["a|b"], ["line1\nline2"], torch.tensor([0.5]))
    assert "a\\|b" in text and "line1<br>line2" in text and "0.500" in text

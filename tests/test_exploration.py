import math

import pytest
import torch

from motg_lightning.evaluation.exploration import (
    hidden_state_entropy,
    matrix_entropy,
    profile_by_step,
    token_exploration,
)
from motg_lightning.rules.paper import Dirichlet
from motg_lightning.rollout.generate import generate


def test_profile_by_step_averages_masked_steps_per_bucket():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    profile = profile_by_step(values, mask, buckets=2)
    assert profile[0] == pytest.approx((1 + 2 + 5) / 3) and math.isnan(profile[1])


def test_token_exploration_on_hand_numbers():
    tokens = torch.tensor([[1, 2, 3, 0], [1, 2, 4, 0], [7, 7, 7, 7], [7, 7, 7, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]).bool()
    result = token_exploration(tokens, mask, group_size=2)
    assert result["distinct_tokens"] == pytest.approx((4 / 6 + 1 / 8) / 2)
    assert result["group_overlap"] == pytest.approx((2 / 4 + 1.0) / 2)


def test_matrix_entropy_is_zero_for_one_direction_and_one_for_orthogonal_states():
    same = torch.ones(5, 8) * torch.arange(1, 6)[:, None]
    assert matrix_entropy(same) == pytest.approx(0.0, abs=1e-6)
    assert matrix_entropy(torch.eye(6, 10)) == pytest.approx(1.0, abs=1e-6)
    assert 0 < matrix_entropy(torch.randn(6, 10)) < 1


def test_hidden_state_entropy_has_one_value_per_layer(tiny_model, prompts, make_settings):
    torch.manual_seed(0)
    rollout = generate(tiny_model, Dirichlet(), *prompts, make_settings(max_new_tokens=8))
    values = hidden_state_entropy(tiny_model, Dirichlet(), rollout)
    assert values.shape == (tiny_model.config.num_hidden_layers + 1,)
    assert ((values >= 0) & (values <= 1)).all()


def test_exploration_script_over_a_checkpoint(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from motg_lightning.lightning.cli import main

    root = Path(__file__).resolve().parents[1]
    main(["fit", "--config", str(root / "configs" / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path}", "--trainer.limit_val_batches=0"])
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    out = tmp_path / "exploration.json"
    done = subprocess.run([sys.executable, "benchmarks/exploration.py", str(checkpoint), "--groups", "2", "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["groups"] == 2 and len(result["entropy_by_step"]) == 8 and len(result["hidden_entropy_by_layer"]) == 3
    assert 0 <= result["distinct_tokens"] <= 1 and out.with_suffix(".png").exists()

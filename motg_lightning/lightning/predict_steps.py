"""``predict`` of :class:`~motg_lightning.lightning.module.MoTGRPOModule`: roll out each question
``evaluation.samples`` times with ``evaluation.decoding`` and return one row per completion
(question, completion, thinking text, extracted answer, score, lengths), which
:class:`~motg_lightning.lightning.prediction_writer.PredictionsJsonl` writes (the questions of
``data.predict_file`` are read by :func:`motg_lightning.tasks.read_questions`)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..evaluation.held_out import evaluation_rule
from ..rewards.scoring import RewardOutput, final_answer


def scorable(entry: dict[str, Any]) -> bool:
    """Whether Reasoning-Gym can score an answer to ``entry``: it has an ``answer`` and names its
    task in ``metadata.source_dataset``."""
    return "answer" in entry and "source_dataset" in (entry.get("metadata") or {})


class ScorableOnly:
    """``reward`` over the completions whose entries are :func:`scorable`; the others get 0 and
    are not given to any scorer (a question without an answer is not a scorer failure)."""

    def __init__(self, reward: Any) -> None:
        self.reward = reward

    def __call__(self, completions: list[str], entries: list[dict[str, Any]]) -> RewardOutput:
        rows = [row for row, entry in enumerate(entries) if scorable(entry)]
        if len(rows) == len(entries):
            return self.reward(completions, entries)
        zeros = torch.zeros(len(entries))
        if not rows:
            return RewardOutput(total=zeros, terms={}, correct=zeros.bool(), reward_errors=0)
        part = self.reward([completions[row] for row in rows], [entries[row] for row in rows])
        index = torch.tensor(rows, dtype=torch.long)

        def spread(values: Tensor) -> Tensor:
            return torch.zeros(len(entries), dtype=values.dtype).index_copy(0, index, values.cpu())

        terms = {name: spread(values) for name, values in part.terms.items()}
        return RewardOutput(spread(part.total), terms, spread(part.correct), part.reward_errors)


class PredictSteps(L.LightningModule):
    """The module's predict hook. Expects ``roll_out``, ``reward``, ``tokenizer``, ``mixture``
    and ``options`` of the module."""

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """One row per question × sample: ``index`` (the question's place in the predicted
        set), ``sample``, ``task``, ``question``, ``completion``, ``thinking`` (the thinking steps'
        tokens as text), ``answer`` (the last ``<answer>`` block, or None), ``score`` (the
        Reasoning-Gym score of the answer, as training and ``validate`` score it; None when the
        entry has no ``answer`` and ``metadata.source_dataset``), ``completion_length`` and
        ``thinking_length`` (tokens)."""
        samples = self.options.evaluation.samples
        scored = self.roll_out(batch, samples, rule=evaluation_rule(self.options.evaluation.decoding, self.mixture),
                               reward=ScorableOnly(self.reward))
        rollout = scored.rollout
        thinking = (rollout.thinking & rollout.completion_mask).cpu()
        thoughts = self.tokenizer.batch_decode([row[keep].tolist() for row, keep in zip(rollout.tokens.cpu(), thinking)],
                                               skip_special_tokens=True)
        lengths, thinking_lengths = rollout.completion_mask.sum(-1).tolist(), thinking.sum(-1).tolist()
        correctness = scored.rewards.terms.get("correctness")
        indices = batch.get("indices") or [None] * len(batch["entries"])
        rows = []
        for row, (entry, completion) in enumerate(zip(scored.entries, scored.completions)):
            answer = final_answer(completion)
            score = None
            if scorable(entry):
                score = float(correctness[row]) if correctness is not None else self._score(answer, entry)
            rows.append({
                "index": indices[row // samples], "sample": row % samples, "task": batch["tasks"][row // samples],
                "question": entry["question"], "completion": completion, "thinking": thoughts[row], "answer": answer,
                "score": score, "completion_length": int(lengths[row]), "thinking_length": int(thinking_lengths[row]),
            })
        return rows

    def _score(self, answer: str | None, entry: dict[str, Any]) -> float:
        """The Reasoning-Gym score when the reward has no correctness term; 0 when the scorer fails."""
        try:
            return self.reward.score(answer, entry)
        except Exception:  # a scorer bug must not end the predictions, as in training
            return 0.0

"""A user's task module, as `data.task_modules` imports it: a Reasoning-Gym dataset registered
with `register_dataset` (only `data.task_modules` imports this module in the tests)."""

from dataclasses import dataclass
from random import Random

from reasoning_gym import register_dataset
from reasoning_gym.dataset import ProceduralDataset
from reasoning_gym.factory import DATASETS

WORDS = ["cat", "apple", "river", "sun", "window", "lemon", "tree", "garden", "moon", "bridge", "cloud", "stone"]


@dataclass
class WordLengthConfig:
    seed: int | None = None
    size: int = 100


class WordLengthDataset(ProceduralDataset):
    """How many letters a word has (Reasoning-Gym's default scorer)."""

    def __init__(self, config: WordLengthConfig):
        super().__init__(config=config, seed=config.seed, size=config.size)

    def __getitem__(self, idx: int) -> dict:
        word = Random(self.seed + idx).choice(WORDS)
        return {"question": f"How many letters are in the word '{word}'?", "answer": str(len(word)),
                "metadata": {"source_dataset": "word_length", "word": word}}


if "word_length" not in DATASETS:
    register_dataset("word_length", WordLengthDataset, WordLengthConfig)


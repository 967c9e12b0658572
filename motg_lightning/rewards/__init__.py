"""Rewards from Reasoning-Gym's scorers (:mod:`.scoring`), each scorer call under a time limit
(:mod:`.time_limit`)."""

from .scoring import RewardFunction, RewardOutput, format_reward

__all__ = ["RewardFunction", "RewardOutput", "format_reward"]

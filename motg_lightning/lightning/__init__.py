"""The Lightning side: the ``LightningModule`` (:mod:`.module`), the Reasoning-Gym
``LightningDataModule`` (:mod:`.data`), the ``LightningCLI`` (:mod:`.cli`), the distributed
strategies (:mod:`.distributed`) and the callbacks and checkpoint state around them. Nothing is
imported here, so the lower layers (rules, rollout, GRPO) can use this package's small helpers
without importing the module."""

"""GRPO over mixture trajectories: the loss (:mod:`.loss`, pure functions with TRL's option
names), the trajectory log-likelihood the loss differentiates (:mod:`.likelihood`) and DAPO's
dynamic sampling (:mod:`.dynamic_sampling`)."""

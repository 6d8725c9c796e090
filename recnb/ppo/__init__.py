"""Stage 05: PPO with the paper's item- and list-level rewards (§2.3, Algorithm 1).

`loop` runs the updates, validation and checkpoints; `update` is one update read top to bottom
(sample → score → advantages → epochs); `grpo` its critic-free counterpart (advantages within groups
of answers to one prompt); `objective` the pure tensor math; `model` the actor,
critic and reference on one copy of the weights; `rollout` sampling and reward placement;
`check` whether training raised the reward (the last actor against its start, paired);
`toy` a small world where a learner must visibly learn.
"""

from recnb.ppo.check import reward_check, reward_gain, save_check
from recnb.ppo.config import PPOConfig
from recnb.ppo.grpo import grpo_update
from recnb.ppo.loop import (
           evaluate,
           load_checkpoint,
           plot_log,
           rl_records,
           save_checkpoint,
           summarise,
           train_ppo,
           valid_slice,
)
from recnb.ppo.model import ActorCritic
from recnb.ppo.rollout import RecScorer
from recnb.ppo.update import batch_records, make_optimizer, ppo_update

__all__ = ["ActorCritic", "PPOConfig", "RecScorer", "batch_records", "evaluate", "grpo_update", "load_checkpoint",
           "make_optimizer", "plot_log", "ppo_update", "reward_check", "reward_gain", "rl_records", "save_check",
           "save_checkpoint", "summarise", "train_ppo", "valid_slice"]

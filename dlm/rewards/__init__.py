"""Reward methods (DESIGN.md section 2) as configurations of one trainer.

    from dlm.rewards import METHODS, MethodContext, train_reward
    from dlm.representations import fit_representation
    represent = fit_representation("ngram-svd:64", log.content)       # fitted on the log's texts
    ctx = MethodContext(log, represent, world=world)
    targets = METHODS["deconfoundlm"].target_fn(ctx)
    reward_fn = train_reward("deconfoundlm", targets, represent)[0]   # texts -> scores
"""
from dlm.rewards.methods import (METHODS, MethodContext, RewardMethod, Targets, get_method,
                                 log_targets, naive_targets)
from dlm.rewards.trainer import (ConfounderEncoder, TrainedReward, TrainerConfig, train_reward,
                                 train_reward_seeds)

__all__ = ["METHODS", "MethodContext", "RewardMethod", "Targets", "get_method", "log_targets",
           "naive_targets", "ConfounderEncoder", "TrainedReward", "TrainerConfig", "train_reward",
           "train_reward_seeds"]

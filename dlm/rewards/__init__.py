"""Reward methods (DESIGN.md section 2) as configurations of one trainer.

    from dlm.rewards import METHODS, MethodContext, train_reward
    from dlm.representations import fit_representation
    represent = fit_representation("ngram-svd:64", log.content)       # fitted on the log's texts
    ctx = MethodContext(log, represent, world=world)
    targets = METHODS["deconfoundlm"].target_fn(ctx)
    reward_fn = train_reward("deconfoundlm", targets, represent)[0]   # texts -> scores

On a real A/B archive (dlm.experiments.upworthy): MethodContext(..., experiment=arms) adds
the experimental methods, and fit_scorer(method, targets, backend) fits any method on a
LinearBackend (exact ridge / Bradley-Terry on a frozen representation, dlm.rewards.linear)
or a TrunkBackend (the byte-level trunk trained by dlm.train, dlm.rewards.trunk).
"""
from dlm.rewards.fit import fit_scorer, fit_scorers, pairwise_loss, regression_loss
from dlm.rewards.methods import (METHODS, MethodContext, RewardMethod, Targets, get_method,
                                 log_targets, naive_targets, observational_methods)
from dlm.rewards.trainer import (ConfounderEncoder, TrainedReward, TrainerConfig, train_reward,
                                 train_reward_seeds)

__all__ = ["METHODS", "MethodContext", "RewardMethod", "Targets", "get_method", "log_targets",
           "naive_targets", "observational_methods", "fit_scorer", "fit_scorers",
           "pairwise_loss", "regression_loss", "ConfounderEncoder", "TrainedReward", "TrainerConfig",
           "train_reward", "train_reward_seeds"]

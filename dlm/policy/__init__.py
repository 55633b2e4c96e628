"""Policy optimisation against any reward (DESIGN.md section 2): best-of-n from the SFT
policy, DPO on reward-ranked pairs, KL-regularised REINFORCE, and one evaluation for all.

A reward is any callable texts -> scores; the SFT policy (dlm.policy.sft) is the
reference every optimiser starts from and is regularised towards.
"""

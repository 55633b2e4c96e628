"""Real A/B-test archives (Upworthy): within-test pairs, story splits, the five reward
models of the observational vs experimental comparison, and their figures.

    pairs    story_of_test, split_tests, headline_arms, within_test_pairs, one_arm_per_test,
             pair_auc, auc_table
    rewards  adjusted_outcomes, RewardData, fit_rewards, LinearBackend, TrunkBackend
    plots    plot_auc, week_effect_table, plot_week_effect
"""

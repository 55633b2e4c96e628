"""Real A/B-test archives (Upworthy): within-test pairs, story splits and the figures of
the observational vs experimental comparison (its reward models are dlm.rewards').

    pairs    story_of_test, split_tests, headline_arms, within_test_pairs, one_arm_per_test,
             nonrandomised_tests, centred_logit_ctr, pair_auc, auc_table, auc_contrasts
    plots    plot_auc, week_effect_table, plot_week_effect
"""

"""The simulation pipelines (they need the world, so they live in sims, above dlm):
compare_rewards (every reward method on one world; its shared SFT policy, representation
and candidate pools), replicate_simulation (a grid of those worlds) and the benchmarks'
world set-up. Scripts parse a config, call one function here and write its outputs."""

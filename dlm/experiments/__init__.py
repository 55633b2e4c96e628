"""Library pipelines of the real-data jobs and the benchmarks' shared helpers: a script
parses its config, calls one function here and writes the outputs (the pipelines that
need the simulated world live in sims.experiments)."""

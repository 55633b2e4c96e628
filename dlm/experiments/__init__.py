"""Library pipelines of the real-data jobs (a script parses its config, calls one of these
and writes its outputs); the pipelines that need the simulated world are in sims.experiments.

    upworthy           observational vs experimental vs deconfounded rewards (Upworthy)
    upworthy_report    its tables, summary and output files
    deconfound_report  report.md and figures of scripts.deconfound
    monday_report      tables and plot of scripts.replicate_monday
    estimate           the summaries of scripts.estimate
    bench              timing and RSS helpers of the benchmarks; torch_twin: the PyTorch twin
"""

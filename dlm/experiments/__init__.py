"""Library pipelines of the real-data jobs (a script parses its config, calls one of these
and writes its outputs).

    upworthy         observational vs experimental vs deconfounded rewards (Upworthy)
    upworthy_report  its tables, summary and output files
"""

"""dlm (DeconfoundLM): align language models with observational outcome data."""
__version__ = "0.1.0"

"""recnb: controllable LLM recommendation (arXiv 2403.05063), one module per pipeline stage."""

__version__ = "0.1.0"

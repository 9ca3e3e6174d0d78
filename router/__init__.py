"""Turnout: a caching, load-balancing sidecar for OpenAI-compatible LLM APIs."""

from router.app import create_app

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]

"""Upstream providers: each translates OpenAI's shapes to one vendor's wire format and back."""

from __future__ import annotations

from router.config import Deployment
from router.providers.anthropic import AnthropicProvider
from router.providers.azure import AzureProvider
from router.providers.base import Answer, Chunk, Provider
from router.providers.gemini import GeminiProvider
from router.providers.mock import MockProvider
from router.providers.openai import OpenAIProvider
from router.providers.pool import ClientPool

__all__ = ["Answer", "Chunk", "ClientPool", "Provider", "build_provider"]


def build_provider(deployment: Deployment, pool: ClientPool) -> Provider:
    """The provider object for one deployment; HTTP providers share the pool's connections."""
    if deployment.provider == "mock":
        return MockProvider(deployment)
    assert deployment.base_url is not None  # config validation requires it
    client = pool.sender_for(deployment.base_url)
    if deployment.provider == "openai":
        return OpenAIProvider(deployment, client)
    if deployment.provider == "azure":
        return AzureProvider(deployment, client)
    if deployment.provider == "anthropic":
        return AnthropicProvider(deployment, client)
    return GeminiProvider(deployment, client)

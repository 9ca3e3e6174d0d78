"""One loaded config at work: the providers, the dispatcher and the cache, and the request path.

The endpoints hand a validated `Inbound` to `Gateway.handle` and render the `Outcome`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.config import Config
from router.dispatch import Dispatcher, Routed, RoutedStream
from router.inbound import Inbound
from router.masking import SecretMasker
from router.metrics import Metrics
from router.providers import ClientPool, Provider
from router.streaming import sse_frames

if TYPE_CHECKING:
    from router.caching import ResponseCaching

__all__ = ["Gateway", "Outcome"]


@dataclass(slots=True)
class Outcome:
    """What the client gets: JSON `body`, or SSE `stream` (already framed)."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        pool: ClientPool,
        providers: dict[str, Provider],
        dispatcher: Dispatcher,
        metrics: Metrics,
        cache: ResponseCaching | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.providers = providers
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.masker = SecretMasker(config.secrets())
        self.client_keys = [k.get_secret_value().encode() for k in config.server.api_keys]
        self.loaded_at = int(time.time())
        self.cache = cache

    async def handle(self, inbound: Inbound) -> Outcome:
        if self.cache is not None:
            return await self.cache.handle(inbound, self.call_upstream, self.outcome_of)
        routed = await self.call_upstream(inbound)
        outcome = self.outcome_of(routed)
        outcome.headers["x-turnout-cache"] = "bypass"
        return outcome

    async def call_upstream(self, inbound: Inbound) -> Routed | RoutedStream:
        if inbound.endpoint == "embeddings":
            return await self.dispatcher.embed(inbound.group, inbound.body)
        if inbound.stream:
            return await self.dispatcher.open_stream(inbound.group, inbound.body)
        return await self.dispatcher.complete(inbound.group, inbound.body)

    def outcome_of(self, routed: Routed | RoutedStream) -> Outcome:
        headers = {
            "x-turnout-model-group": routed.group,
            "x-turnout-deployment": routed.deployment,
            "x-turnout-attempts": str(routed.attempts),
        }
        if isinstance(routed, RoutedStream):
            return Outcome(headers, stream=sse_frames(routed.chunks, self.masker))
        return Outcome(headers, body=self.masker.mask(routed.answer.encode()))

    def status(self) -> dict[str, Any]:
        """What `/admin/status` shows: deployments and cache. No secrets."""
        return {
            "config_loaded_at": self.loaded_at,
            "deployments": self.dispatcher.status(),
            "cache": self.cache.status() if self.cache is not None else {"enabled": False},
            "traffic": self.metrics.traffic.snapshot(
                [g.name for g in self.config.models],
                [d.id for g in self.config.models for d in g.deployments]),
        }

    async def aclose(self) -> None:
        if self.cache is not None:
            await self.cache.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        await self.pool.aclose()

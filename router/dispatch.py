"""One request's path through the router: pick a deployment, call it, commit streams."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.config import Config
from router.errors import AllAttemptsFailed, ModelNotFound, UpstreamFailure
from router.providers import Answer, Chunk, Provider
from router.providers.base import is_content

__all__ = ["Dispatcher", "Routed", "RoutedStream"]


@dataclass(slots=True)
class Routed:
    group: str
    deployment: str
    attempts: int
    answer: Answer


@dataclass(slots=True)
class RoutedStream:
    """A stream already committed to `deployment`: its first content has arrived.

    Iterating `chunks` yields the buffered head, then the rest as it arrives; a failure
    after the commit raises UpstreamFailure. Closing the iterator cancels the upstream call.
    """

    group: str
    deployment: str
    attempts: int
    chunks: AsyncIterator[Chunk]


class Dispatcher:
    def __init__(
        self, config: Config, providers: Mapping[str, Provider], rng: random.Random | None = None
    ) -> None:
        self._config = config
        self._providers = providers
        self._rng = rng or random.Random()

    def status(self) -> list[dict[str, Any]]:
        return [
            {"id": d.id, "group": group.name, "provider": d.provider, "model": d.model,
             "state": "healthy"}
            for group in self._config.models for d in group.deployments
        ]

    def _pick(self, group_name: str) -> Provider:
        group = self._config.group(group_name)
        if group is None:
            raise ModelNotFound(f"The model '{group_name}' does not exist", param="model")
        deployments = group.deployments
        chosen = self._rng.choices(deployments, weights=[d.weight for d in deployments])[0]
        return self._providers[chosen.id]

    async def complete(self, group: str, body: dict[str, Any]) -> Routed:
        provider = self._pick(group)
        try:
            answer = await provider.complete(body)
        except UpstreamFailure as exc:
            raise AllAttemptsFailed(f"every attempt failed; last: {exc}") from None
        return Routed(group, provider.deployment.id, 1, answer)

    async def embed(self, group: str, body: dict[str, Any]) -> Routed:
        provider = self._pick(group)
        try:
            answer = await provider.embed(body)
        except UpstreamFailure as exc:
            raise AllAttemptsFailed(f"every attempt failed; last: {exc}") from None
        return Routed(group, provider.deployment.id, 1, answer)

    async def open_stream(self, group: str, body: dict[str, Any]) -> RoutedStream:
        provider = self._pick(group)
        chunks = provider.stream(body)
        head: list[Chunk] = []
        try:
            async for chunk in chunks:
                head.append(chunk)
                if is_content(chunk.data):
                    break
        except UpstreamFailure as exc:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise AllAttemptsFailed(f"every attempt failed; last: {exc}") from None
        return RoutedStream(group, provider.deployment.id, 1, _chain(head, chunks))


async def _chain(head: list[Chunk], rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        for chunk in head:
            yield chunk
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]

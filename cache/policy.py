"""What a request's cache controls say: cache it or not, look up or not, store how long (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Decision", "decide"]

Mode = Literal["opt-in", "always"]


@dataclass(frozen=True, slots=True)
class Decision:
    """`enabled` False: the cache is off for this request (x-turnout-cache: bypass).

    `lookup` False is `no-cache` (refresh); `store` False is `no-store`; `max_age` is
    `s-maxage` (None: any fresh entry); `namespace` the key space.
    """

    enabled: bool
    lookup: bool = True
    store: bool = True
    ttl: float = 0.0
    max_age: float | None = None
    namespace: str = ""


def decide(
    *,
    mode: Mode,
    caching: bool | None,
    controls: Mapping[str, Any],
    default_ttl: float,
    default_namespace: str,
) -> Decision:
    """The decision for one request.

    `caching` (the body's flag) wins over `cache.mode`; `"cache": {"use-cache": true}`
    also opts in (LiteLLM's spelling), `false` opts out. The other controls apply only
    when caching is on. `controls` were type-checked by the request parser.
    """
    if not _enabled(mode, caching, controls.get("use-cache")):
        return Decision(enabled=False)
    ttl = controls.get("ttl")
    ttl = default_ttl if ttl is None else float(ttl)
    max_age = controls.get("s-maxage")
    namespace = controls.get("namespace") or default_namespace
    return Decision(
        enabled=True,
        lookup=not controls.get("no-cache", False),
        # A ttl of 0 stores nothing: the entry would be expired when written.
        store=not controls.get("no-store", False) and ttl > 0,
        ttl=ttl,
        max_age=None if max_age is None else float(max_age),
        namespace=str(namespace),
    )


def _enabled(mode: Mode, caching: bool | None, use_cache: Any) -> bool:
    if caching is not None:
        return caching
    if isinstance(use_cache, bool):
        return use_cache
    return mode == "always"

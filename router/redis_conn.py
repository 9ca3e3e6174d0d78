"""Builds the one Redis client the cache and the router state share."""

from __future__ import annotations

from typing import Any

from router.config import Config, RedisSettings

__all__ = ["needs_redis", "open_redis"]


def needs_redis(config: Config) -> bool:
    return config.redis is not None and (
        config.cache.backend == "redis" or config.router.state == "redis"
    )


def open_redis(settings: RedisSettings) -> Any:
    """A redis-py asyncio client (a cluster client for Redis Cluster URLs).

    Nothing connects until the first command, so Turnout starts while Redis is down;
    every command is bounded by `settings.timeout`.
    """
    from redis.asyncio import Redis, RedisCluster  # only a Turnout with Redis loads it

    url = settings.url.get_secret_value()
    options: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "health_check_interval": 0,
    }
    if settings.is_cluster:
        url = url.replace("redis+cluster://", "redis://").replace("rediss+cluster://", "rediss://")
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, retry_on_timeout=False, **options)

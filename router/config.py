"""router.toml: the pydantic models of the whole schema, and load_config(path)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

__all__ = [
    "CacheSettings",
    "Config",
    "ConfigError",
    "Deployment",
    "ModelGroup",
    "RedisSettings",
    "RouterSettings",
    "ServerSettings",
    "load_config",
    "parse_config",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """router.toml could not be used; `problems` holds one "path: message" line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as "250ms", "30s", "5m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("must be a duration: a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(
            f"must be a duration: a number of seconds or a string like '30s', not {value!r}"
        )
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _drop_empty_keys(value: Any) -> Any:
    # `api_keys = ["${TURNOUT_API_KEY:-}"]` must mean "no auth" when the variable is unset.
    if isinstance(value, list):
        return [key for key in value if not (isinstance(key, str) and key == "")]
    return value


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    api_keys: Annotated[tuple[SecretStr, ...], BeforeValidator(_drop_empty_keys)] = ()
    admin_key: Annotated[SecretStr | None, BeforeValidator(_none_if_empty)] = None
    max_body_bytes: int = Field(10_485_760, gt=0)
    request_timeout: Duration = Field(600.0, gt=0)
    shutdown_grace: Duration = 30.0


class RedisSettings(_Frozen):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    timeout: Duration = Field(0.25, gt=0)
    cluster: bool = False

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: SecretStr) -> SecretStr:
        scheme = urlsplit(url.get_secret_value()).scheme
        if scheme not in {"redis", "rediss", "redis+cluster", "rediss+cluster", "unix"}:
            raise ValueError("must be a redis://, rediss://, redis+cluster:// or unix:// URL")
        return url

    @property
    def is_cluster(self) -> bool:
        return self.cluster or "+cluster" in urlsplit(self.url.get_secret_value()).scheme

    def display_url(self) -> str:
        """The URL with any password replaced by '***', for logs and `turnout check`."""
        parts = urlsplit(self.url.get_secret_value())
        if parts.password is None:
            return parts.geturl()
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


class CacheSettings(_Frozen):
    backend: Literal["memory", "redis"] = "memory"
    mode: Literal["opt-in", "always"] = "opt-in"
    ttl: Duration = Field(3600.0, gt=0)
    namespace: str = Field("turnout", min_length=1)
    scope: Literal["per-key", "shared"] = "per-key"
    coalesce: bool = True
    max_entries: int = Field(10_000, gt=0)
    stale_if_error: Duration = 0.0


class RouterSettings(_Frozen):
    strategy: Literal["weighted", "least-busy", "latency", "usage"] = "weighted"
    num_retries: int = Field(2, ge=0, le=20)
    retry_backoff: Duration = 0.1
    allowed_fails: int = Field(3, ge=0)
    cooldown: Duration = 30.0
    timeout: Duration = Field(60.0, gt=0)
    state: Literal["local", "redis"] = "local"
    hedge_after: Duration = 0.0


Provider = Literal["openai", "azure", "anthropic", "gemini", "mock"]


class Deployment(_Frozen):
    """One upstream deployment of a model group. `id` is filled in by the group."""

    id: str = ""
    provider: Provider
    base_url: str | None = None
    api_key: Annotated[SecretStr | None, BeforeValidator(_none_if_empty)] = None
    model: str | None = None
    weight: float = Field(1.0, gt=0)
    rpm: int = Field(0, ge=0)
    tpm: int = Field(0, ge=0)
    max_concurrency: int = Field(0, ge=0)
    timeout: Duration | None = Field(None, gt=0)
    api_version: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Built-in `mock` provider only: a fixed reply instead of the echo, and a delay before it.
    mock_response: str | None = None
    mock_latency: Duration = 0.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
        return url.rstrip("/")


class ModelGroup(_Frozen):
    name: str = Field(min_length=1)
    deployments: tuple[Deployment, ...] = Field(min_length=1)


class Config(_Frozen):
    server: ServerSettings = ServerSettings()
    redis: RedisSettings | None = None
    cache: CacheSettings = CacheSettings()
    router: RouterSettings = RouterSettings()
    models: tuple[ModelGroup, ...] = Field(min_length=1)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    context_window_fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def group(self, name: str) -> ModelGroup | None:
        for group in self.models:
            if group.name == name:
                return group
        return None

    def secrets(self) -> list[str]:
        """Every configured secret, for masking anything that leaves the process."""
        found = [key.get_secret_value() for key in self.server.api_keys]
        if self.server.admin_key is not None:
            found.append(self.server.admin_key.get_secret_value())
        if self.redis is not None:
            password = urlsplit(self.redis.url.get_secret_value()).password
            if password:
                found.append(password)
        for group in self.models:
            for deployment in group.deployments:
                if deployment.api_key is not None:
                    found.append(deployment.api_key.get_secret_value())
        return sorted({s for s in found if s}, key=len, reverse=True)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate router.toml; raises ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_config(text, env=os.environ if env is None else env)


def parse_config(text: str, env: Mapping[str, str]) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"router.toml: invalid TOML: {exc}"]) from None
    problems: list[str] = []
    data = _interpolate(raw, env, (), problems)
    problems += _semantic_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return _with_deployment_ids(config)


def _interpolate(
    value: Any, env: Mapping[str, str], path: tuple[Any, ...], problems: list[str]
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, (*path, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{_toml_path(path)}: environment variable {name} is not set")
        return ""

    return _ENV_REF.sub(substitute, value)


def _semantic_problems(data: dict[str, Any]) -> list[str]:
    """Checks across sections; tolerant of wrong types, which pydantic reports itself."""
    problems: list[str] = []
    models = data.get("models")
    if not isinstance(models, list):
        return problems
    names: set[str] = set()
    ids: set[str] = set()
    for g, group in enumerate(models):
        if not isinstance(group, dict):
            continue
        name = group.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(f"models[{g}].name: duplicate model group {name!r}")
            names.add(name)
        deployments = group.get("deployments")
        if not isinstance(deployments, list):
            continue
        for d, deployment in enumerate(deployments):
            if isinstance(deployment, dict):
                here = f"models[{g}].deployments[{d}]"
                problems += _deployment_problems(here, deployment)
                dep_id = deployment.get("id") or f"{name}/{d}"
                if dep_id in ids:
                    problems.append(f"{here}.id: duplicate deployment id {dep_id!r}")
                ids.add(dep_id)
    for section in ("fallbacks", "context_window_fallbacks"):
        table = data.get(section)
        if not isinstance(table, dict):
            continue
        for source, targets in table.items():
            if source not in names:
                problems.append(f"{section}.{source}: no model group named {source!r}")
            for i, target in enumerate(targets if isinstance(targets, list) else []):
                if isinstance(target, str) and target not in names:
                    problems.append(f"{section}.{source}[{i}]: no model group named {target!r}")
    redis_needed = [
        f"{section}.{key}"
        for section, key, value in (("cache", "backend", "redis"), ("router", "state", "redis"))
        if isinstance(data.get(section), dict) and data[section].get(key) == value
    ]
    redis = data.get("redis")
    if redis_needed and not (isinstance(redis, dict) and redis.get("url")):
        for where in redis_needed:
            problems.append(f"{where}: 'redis' needs a [redis] table with a url")
    return problems


def _deployment_problems(here: str, deployment: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    provider = deployment.get("provider")
    if provider not in {"openai", "azure", "anthropic", "gemini", "mock"}:
        return problems
    if provider != "mock":
        if not deployment.get("base_url"):
            problems.append(f"{here}.base_url: required for provider {provider!r}")
        if not deployment.get("model"):
            problems.append(f"{here}.model: required for provider {provider!r}")
        for key in ("mock_response", "mock_latency"):
            if key in deployment:
                problems.append(f"{here}.{key}: only for provider 'mock'")
    if "api_version" in deployment and provider != "azure":
        problems.append(f"{here}.api_version: only for provider 'azure'")
    return problems


def _with_deployment_ids(config: Config) -> Config:
    groups = []
    for group in config.models:
        deployments = tuple(
            d if d.id else d.model_copy(update={"id": f"{group.name}/{i}"})
            for i, d in enumerate(group.deployments)
        )
        groups.append(group.model_copy(update={"deployments": deployments}))
    return config.model_copy(update={"models": tuple(groups)})


def _toml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "router.toml"


def _describe(error: Any) -> str:
    loc = tuple(part for part in error["loc"] if part not in {"function-after"})
    if error["type"] == "extra_forbidden":
        return f"{_toml_path(loc)}: unknown key"
    if error["type"] == "missing":
        return f"{_toml_path(loc)}: required"
    message = error["msg"].removeprefix("Value error, ")
    return f"{_toml_path(loc)}: {message}"

"""`turnout import-litellm`: a LiteLLM proxy config.yaml rewritten as router.toml.

What is carried over: `model_list` (provider prefixes, `api_base`, `api_key`, `api_version`,
`rpm`/`tpm`/`weight`, `timeout`, `max_parallel_requests`, `model_info.id`),
`router_settings` (strategy, retries, timeouts, allowed_fails, cooldown_time, Redis),
`litellm_settings` (fallbacks, context_window_fallbacks, cache and cache_params,
num_retries, request_timeout) and `general_settings.master_key`. LiteLLM's
`os.environ/VAR` becomes `${VAR}`. Every other setting becomes a comment saying it was
not carried over, beside the place it would have gone; values of settings whose name
suggests a secret are never printed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ImportFailed", "convert", "convert_file"]

_ENV_PREFIX = "os.environ/"
_SECRET_NAME = re.compile(r"key|secret|password|token|credential|url|dsn", re.IGNORECASE)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/@-]{1,100}$")

_STRATEGIES = {"simple-shuffle": "weighted", "least-busy": "least-busy",
               "latency-based-routing": "latency", "usage-based-routing": "usage",
               "usage-based-routing-v2": "usage"}


@dataclass(frozen=True, slots=True)
class _Vendor:
    provider: str
    base_url: str | None  # None: the config must give api_base
    key_env: str | None  # LiteLLM's default key variable; None: no key needed
    suffix: str = ""  # appended to a given api_base (Ollama's OpenAI API is under /v1)


# LiteLLM provider prefixes Turnout can serve, with LiteLLM's defaults for each.
_VENDORS = {
    "openai": _Vendor("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "azure": _Vendor("azure", None, "AZURE_API_KEY"),
    "anthropic": _Vendor("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "gemini": _Vendor("gemini", "https://generativelanguage.googleapis.com", "GEMINI_API_KEY"),
    "groq": _Vendor("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": _Vendor("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "deepseek": _Vendor("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "together_ai": _Vendor("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "fireworks_ai": _Vendor("openai", "https://api.fireworks.ai/inference/v1",
                            "FIREWORKS_AI_API_KEY"),
    "openrouter": _Vendor("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "perplexity": _Vendor("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "xai": _Vendor("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "deepinfra": _Vendor("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "cerebras": _Vendor("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "hosted_vllm": _Vendor("openai", None, None),
    "vllm": _Vendor("openai", None, None),
    "lm_studio": _Vendor("openai", None, None),
    "llamafile": _Vendor("openai", None, None),
    "ollama": _Vendor("openai", "http://localhost:11434/v1", None, suffix="/v1"),
    "ollama_chat": _Vendor("openai", "http://localhost:11434/v1", None, suffix="/v1"),
}
# Model names LiteLLM routes without a prefix.
_UNPREFIXED = (("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
               ("chatgpt-", "openai"), ("text-embedding-", "openai"), ("claude-", "anthropic"))

# Deployment parameters that cannot change which upstream answers, and need no comment.
_SILENT_PARAMS = frozenset({"model", "api_base", "base_url", "api_key", "api_version", "rpm",
                            "tpm", "weight", "timeout", "max_parallel_requests", "organization",
                            "extra_headers", "headers"})


class ImportFailed(Exception):
    """The file is not a LiteLLM config that can be read."""


def convert_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportFailed(f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ImportFailed(f"invalid YAML: {exc}") from None
    return convert(data, source=Path(path).name)


def convert(data: Any, source: str = "config.yaml") -> str:
    """The router.toml text for a parsed LiteLLM config."""
    if not isinstance(data, dict):
        raise ImportFailed("not a LiteLLM config: the top level must be a mapping")
    if not isinstance(data.get("model_list"), list) or not data["model_list"]:
        raise ImportFailed("not a LiteLLM config: no model_list")
    return _Converter(data, source).run()


def _env(value: Any) -> Any:
    """LiteLLM's `os.environ/VAR` as Turnout's `${VAR}`; anything else unchanged."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        return "${" + value[len(_ENV_PREFIX):] + "}"
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    # A JSON string is a valid TOML basic string: the same escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _shown(name: str, value: Any) -> str:
    """A setting for a comment: its value unless its name suggests a secret."""
    if _SECRET_NAME.search(name) and not (isinstance(value, str)
                                          and value.startswith(_ENV_PREFIX)):
        return f"{name} (value not shown)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{name} = {text if len(text) <= 120 else text[:117] + '...'}"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else number


@dataclass
class _Section:
    name: str
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        if not self.values and not self.notes:
            return []
        lines = [f"[{self.name}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in self.values.items()]
        lines += [f"# not carried over: {note}" for note in self.notes]
        return [*lines, ""]


class _Converter:
    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source
        self.server = _Section("server")
        self.redis = _Section("redis")
        self.cache = _Section("cache")
        self.router = _Section("router")
        self.fallbacks = _Section("fallbacks")
        self.cw_fallbacks = _Section("context_window_fallbacks")
        self.top_notes: list[str] = []
        self.groups: dict[str, list[tuple[dict[str, Any], list[str]]]] = {}
        self.skipped: dict[str, list[str]] = {}
        self.ids: set[str] = set()

    def run(self) -> str:
        for index, entry in enumerate(self.data["model_list"]):
            self._model_entry(index, entry)
        self._router_settings(self._mapping("router_settings"))
        self._litellm_settings(self._mapping("litellm_settings"))
        self._general_settings(self._mapping("general_settings"))
        env = self._mapping("environment_variables")
        if env:
            self.top_notes.append("environment_variables: set these in Turnout's environment "
                                  "instead: " + ", ".join(sorted(map(str, env))))
        for key in self.data:
            if key not in {"model_list", "router_settings", "litellm_settings",
                           "general_settings", "environment_variables"}:
                self.top_notes.append(f"{key}: no Turnout equivalent")
        return self._render()

    def _mapping(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.top_notes.append(f"{name}: not a mapping, ignored")
            return {}
        return value

    def _model_entry(self, index: int, entry: Any) -> None:
        where = f"model_list[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            self.top_notes.append(f"{where}: no model_name, skipped")
            return
        group = entry["model_name"]
        params = entry.get("litellm_params")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str):
            self.skipped.setdefault(group, []).append(f"{where}: no litellm_params.model")
            return
        if "*" in group:
            self.skipped.setdefault(group, []).append(
                f"{where}: wildcard model_name {group!r} (Turnout routes named groups only)")
            return
        deployment, notes = self._deployment(where, entry, params)
        if deployment is None:
            self.skipped.setdefault(group, []).extend(notes)
            return
        self.groups.setdefault(group, []).append((deployment, notes))

    def _deployment(self, where: str, entry: dict[str, Any],
                    params: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        prefix, _, rest = params["model"].partition("/")
        if not rest:
            prefix, rest = self._unprefixed(params["model"], params), params["model"]
        vendor = _VENDORS.get(prefix)
        if vendor is None:
            return None, [f"{where}: provider {prefix!r} ({params['model']}) is not supported "
                          "by Turnout (openai, azure, anthropic, gemini and OpenAI-compatible "
                          "servers are)"]
        out: dict[str, Any] = {}
        notes: list[str] = []
        info = entry.get("model_info") if isinstance(entry.get("model_info"), dict) else {}
        dep_id = info.get("id") if isinstance(info, dict) else None
        if isinstance(dep_id, str) and _SAFE_ID.match(dep_id) and dep_id not in self.ids:
            out["id"] = dep_id
            self.ids.add(dep_id)
        elif dep_id is not None:
            notes.append(f"model_info.id {dep_id!r} (not a usable or unique id)")
        out["provider"] = vendor.provider
        base = _env(params.get("api_base") or params.get("base_url"))
        if isinstance(base, str) and base:
            base = base.rstrip("/")
            if vendor.suffix and not base.startswith("${") and not base.endswith(vendor.suffix):
                base += vendor.suffix
            out["base_url"] = base
        elif vendor.base_url is not None:
            out["base_url"] = vendor.base_url
        elif prefix == "azure":
            out["base_url"] = "${AZURE_API_BASE}"  # where LiteLLM looks when api_base is unset
        else:
            return None, [f"{where}: {params['model']} needs an api_base"]
        key = _env(params.get("api_key"))
        if isinstance(key, str) and key:
            out["api_key"] = key
        elif vendor.key_env is not None:
            out["api_key"] = "${" + vendor.key_env + "}"
        out["model"] = rest
        for name, target in (("rpm", "rpm"), ("tpm", "tpm"), ("weight", "weight"),
                             ("max_parallel_requests", "max_concurrency"),
                             ("timeout", "timeout")):
            value = params.get(name, entry.get(name) if name in ("rpm", "tpm") else None)
            if value is None:
                continue
            number = _number(value)
            if number is None or number < 0 or (name in ("weight", "timeout") and number == 0):
                notes.append(_shown(name, value))
            elif number or name not in ("rpm", "tpm"):
                out[target] = number if name in ("weight", "timeout") else int(number)
        version = _env(params.get("api_version"))
        if version is not None:
            if vendor.provider == "azure":
                out["api_version"] = str(version)
            else:
                notes.append(_shown("api_version", version))
        headers = self._headers(params, notes)
        if headers:
            out["headers"] = headers
        notes += [_shown(f"litellm_params.{k}", v) for k, v in params.items()
                  if k not in _SILENT_PARAMS]
        if isinstance(info, dict):
            notes += [_shown(f"model_info.{k}", v) for k, v in info.items() if k != "id"]
        return out, notes

    def _unprefixed(self, model: str, params: dict[str, Any]) -> str:
        for start, vendor in _UNPREFIXED:
            if model.startswith(start):
                return vendor
        # An api_base with no prefix: LiteLLM's docs use this for OpenAI-compatible servers.
        return "openai" if params.get("api_base") else model

    @staticmethod
    def _headers(params: dict[str, Any], notes: list[str]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name in ("extra_headers", "headers"):
            value = params.get(name)
            if isinstance(value, dict):
                headers.update({str(k): str(_env(v)) for k, v in value.items()})
            elif value is not None:
                notes.append(_shown(name, value))
        org = params.get("organization")
        if org is not None:
            headers["OpenAI-Organization"] = str(_env(org))
        return headers

    def _router_settings(self, settings: dict[str, Any]) -> None:
        handled = {"routing_strategy", "num_retries", "timeout", "allowed_fails",
                   "cooldown_time", "retry_after", "redis_host", "redis_port",
                   "redis_password", "redis_url", "fallbacks", "context_window_fallbacks"}
        strategy = settings.get("routing_strategy")
        if strategy is not None:
            if strategy in _STRATEGIES:
                self.router.values["strategy"] = _STRATEGIES[strategy]
            else:
                self.router.notes.append(_shown("routing_strategy", strategy) +
                                         " (Turnout's default, weighted, is used)")
        for name, target in (("num_retries", "num_retries"), ("timeout", "timeout"),
                             ("allowed_fails", "allowed_fails"), ("cooldown_time", "cooldown"),
                             ("retry_after", "retry_backoff")):
            self._router_number(settings, name, target)
        if self._redis_from(settings, "redis_host", "redis_port", "redis_password",
                            "redis_url"):
            # LiteLLM shares usage and cooldowns across proxy instances through this Redis.
            self.router.values["state"] = "redis"
        for name in ("fallbacks", "context_window_fallbacks"):
            if name in settings:
                self._fallbacks(name, settings[name], "router_settings")
        self.router.notes += [f"router_settings.{_shown(k, v)}" for k, v in settings.items()
                              if k not in handled]

    def _router_number(self, settings: dict[str, Any], name: str, target: str) -> None:
        if name not in settings:
            return
        number = _number(settings[name])
        if number is None or number < 0 or (target == "timeout" and number == 0):
            self.router.notes.append(_shown(name, settings[name]))
        else:
            self.router.values[target] = number

    def _redis_from(self, settings: dict[str, Any], host: str, port: str, password: str,
                    url: str) -> bool:
        if settings.get(url):
            self._redis_url(str(_env(settings[url])))
            return True
        if not settings.get(host):
            return False
        secret = _env(settings.get(password))
        auth = f":{secret}@" if secret else ""
        where = f"{_env(settings[host])}:{_env(settings.get(port) or 6379)}"
        self._redis_url(f"redis://{auth}{where}/0")
        if secret and not str(secret).startswith("${"):
            self.redis.notes.append("the Redis password is written in the URL: characters "
                                    "such as @ or / in it must be percent-encoded")
        return True

    def _redis_url(self, url: str) -> None:
        known = self.redis.values.setdefault("url", url)
        if known != url:
            # Turnout has one Redis for the cache and the router state alike.
            self.redis.notes.append("a second Redis (the cache's and the router's differ); "
                                    "both use the url above")

    def _fallbacks(self, name: str, value: Any, where: str) -> None:
        section = self.fallbacks if name == "fallbacks" else self.cw_fallbacks
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                section.notes.append(f"{where}.{_shown(name, item)}")
                continue
            for source, targets in item.items():
                listed = targets if isinstance(targets, list) else [targets]
                if source not in self.groups:
                    section.notes.append(f"{where}.{name}: {source!r} is not a model group here")
                    continue
                kept = [t for t in listed if isinstance(t, str) and t in self.groups]
                for dropped in (t for t in listed if t not in kept):
                    section.notes.append(f"{where}.{name}: {source!r} -> {dropped!r}: not a "
                                         "model group here")
                if kept:
                    section.values[str(source)] = kept

    def _litellm_settings(self, settings: dict[str, Any]) -> None:
        handled = {"fallbacks", "context_window_fallbacks", "cache", "cache_params",
                   "num_retries", "request_timeout"}
        for name in ("fallbacks", "context_window_fallbacks"):
            if name in settings:
                self._fallbacks(name, settings[name], "litellm_settings")
        if "num_retries" not in self.router.values:
            self._router_number(settings, "num_retries", "num_retries")
        if "timeout" not in self.router.values:
            self._router_number(settings, "request_timeout", "timeout")
        params = settings.get("cache_params")
        self._cache(bool(settings.get("cache")), params if isinstance(params, dict) else {})
        for name, value in settings.items():
            if name in handled:
                continue
            note = f"litellm_settings.{_shown(name, value)}"
            if name in ("callbacks", "success_callback", "failure_callback") and (
                    "otel" in str(value)):
                note += " (Turnout exports traces itself: set OTEL_EXPORTER_OTLP_ENDPOINT)"
            self.top_notes.append(note)

    def _cache(self, enabled: bool, params: dict[str, Any]) -> None:
        if not enabled:
            # Without `cache: true` LiteLLM caches nothing; opt-in caches only requests
            # that ask with "caching": true, which LiteLLM clients never send.
            self.cache.values["mode"] = "opt-in"
            return
        kind = params.get("type", "redis")
        if kind == "redis":
            self.cache.values["backend"] = "redis"
            if not self._redis_from(params, "host", "port", "password", "url"):
                # LiteLLM's own defaults: the REDIS_* variables.
                self.redis.values.setdefault(
                    "url", "redis://:${REDIS_PASSWORD:-}@${REDIS_HOST}:${REDIS_PORT:-6379}/0")
        elif kind in ("local", "in-memory", "in_memory"):
            self.cache.values["backend"] = "memory"
        else:
            self.cache.values["backend"] = "memory"
            self.cache.notes.append(f"cache_params.type = {kind!r} (the in-process memory "
                                    "cache is used instead)")
        mode = params.get("mode", "default_on")
        self.cache.values["mode"] = "opt-in" if mode == "default_off" else "always"
        ttl = _number(params.get("ttl"))
        if ttl is not None and ttl > 0:
            self.cache.values["ttl"] = ttl
        if isinstance(params.get("namespace"), str) and params["namespace"]:
            self.cache.values["namespace"] = params["namespace"]
        # LiteLLM's cache key does not depend on the caller's key: its entries are shared.
        self.cache.values["scope"] = "shared"
        handled = {"type", "host", "port", "password", "url", "mode", "ttl", "namespace"}
        self.cache.notes += [f"cache_params.{_shown(k, v)}" for k, v in params.items()
                             if k not in handled]

    def _general_settings(self, settings: dict[str, Any]) -> None:
        master = _env(settings.get("master_key"))
        if isinstance(master, str) and master:
            # LiteLLM's master key both calls the API and administers the proxy.
            self.server.values["api_keys"] = [master]
            self.server.values["admin_key"] = master
        self.server.notes += [f"general_settings.{_shown(k, v)}" for k, v in settings.items()
                              if k != "master_key"]

    def _render(self) -> str:
        lines = [f"# router.toml converted by `turnout import-litellm` from {self.source}.",
                 "# Lines starting with \"# not carried over\" are LiteLLM settings Turnout has",
                 "# no equivalent for: review them. Check the result with `turnout check`.", ""]
        for note in self.top_notes:
            lines.append(f"# not carried over: {note}")
        if self.top_notes:
            lines.append("")
        for section in (self.server, self.redis, self.cache, self.router):
            lines += section.render()
        for group, deployments in self.groups.items():
            lines += ["[[models]]", f"name = {_toml_value(group)}", ""]
            for deployment, notes in deployments:
                lines.append("  [[models.deployments]]")
                lines += [f"  {_toml_key(k)} = {_toml_value(v)}" for k, v in deployment.items()]
                lines += [f"  # not carried over: {note}" for note in notes]
                lines.append("")
            lines += [f"  # not carried over: {note}" for note in self.skipped.pop(group, [])]
        for group, notes in self.skipped.items():
            lines.append(f"# not carried over: model group {group!r}, no deployment Turnout "
                         "can serve:")
            lines += [f"#   {note}" for note in notes]
        if self.skipped:
            lines.append("")
        for section in (self.fallbacks, self.cw_fallbacks):
            lines += section.render()
        return "\n".join(lines).rstrip("\n") + "\n"

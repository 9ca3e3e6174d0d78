"""`turnout import-litellm`: LiteLLM configs from its documentation become working router.toml."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import yaml

from router.cli import main
from router.config import parse_config
from router.litellm_import import ImportFailed, convert, convert_file
from tests.support import ROOT, RecordingUpstream, app_client

DATA = ROOT / "tests" / "data" / "litellm"
EXAMPLES = sorted(DATA.glob("*.yaml"))
ENV = {name: f"value-of-{name.lower()}" for name in (
    "OPENAI_API_KEY", "AZURE_API_KEY", "AZURE_EUROPE_API_KEY", "AZURE_CANADA_API_KEY",
    "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY", "VLLM_API_KEY",
    "LITELLM_MASTER_KEY", "REDIS_PASSWORD")} | {
    "REDIS_HOST": "redis.internal", "REDIS_PORT": "6380",
    "AZURE_API_BASE": "https://shared.openai.azure.com"}


def litellm_groups(path: Path) -> dict[str, list[dict]]:
    """model_name -> litellm_params of each deployment Turnout can serve."""
    groups: dict[str, list[dict]] = {}
    for entry in yaml.safe_load(path.read_text())["model_list"]:
        model = entry["litellm_params"]["model"]
        if model.startswith(("bedrock/", "openai/*")) or "*" in entry["model_name"]:
            continue
        groups.setdefault(entry["model_name"], []).append(entry["litellm_params"])
    return groups


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_converted_config_passes_turnout_check(path, tmp_path, capsys, monkeypatch):
    assert main(["import-litellm", str(path)]) == 0
    out = tmp_path / "router.toml"
    out.write_text(capsys.readouterr().out)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    for group in litellm_groups(path):
        assert f"\n  {group}\n" in printed.out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_converted_config_has_the_same_groups_and_deployments(path):
    config = parse_config(convert_file(path), ENV)
    groups = litellm_groups(path)
    assert [g.name for g in config.models] == list(groups)
    for group in config.models:
        models = [p["model"].split("/", 1)[-1] if "/" in p["model"] else p["model"]
                  for p in groups[group.name]]
        assert [d.model for d in group.deployments] == models


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
async def test_converted_config_routes_each_group_to_its_upstreams(path):
    servable = _servable(parse_config(convert_file(path), ENV))
    upstream = RecordingUpstream(vendor_answer)
    keys = servable.server.api_keys
    headers = {"authorization": f"Bearer {keys[0].get_secret_value()}"} if keys else {}
    async with app_client(servable, upstream.transport(), rng=random.Random(1)) as client:
        for group in servable.models:
            expected = {(urlsplit(d.base_url).netloc, d.model) for d in group.deployments}
            seen: set[tuple[str, str]] = set()
            for _ in range(100):
                if seen == expected:
                    break
                before = upstream.calls
                if "embedding" in group.name:
                    endpoint, body = "/v1/embeddings", {"model": group.name, "input": "hi"}
                else:
                    endpoint = "/v1/chat/completions"
                    body = {"model": group.name, "messages": [{"role": "user", "content": "hi"}]}
                response = await client.post(endpoint, json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert response.headers["x-turnout-model-group"] == group.name
                sent = upstream.requests[before]
                seen.add((sent.url.netloc.decode(), upstream_model(sent)))
                assert seen <= expected
            assert seen == expected


def _servable(config):
    """The config served in-process: local state and memory cache, every group kept."""
    return config.model_copy(update={
        "redis": None,
        "cache": config.cache.model_copy(update={"backend": "memory"}),
        # Weighted picks reach every deployment; the test is about where groups go.
        "router": config.router.model_copy(update={"state": "local", "strategy": "weighted"}),
        "context_window_fallbacks": {}})


def vendor_answer(request: httpx.Request) -> httpx.Response:
    """A success in the wire format of whichever vendor the request went to."""
    path = request.url.path
    if path.endswith("/v1/messages"):
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}})
    if path.endswith(":generateContent"):
        return httpx.Response(200, json={
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                              "totalTokenCount": 2}})
    return RecordingUpstream.ok(request)


def upstream_model(request: httpx.Request) -> str:
    """The upstream model a request named: in the URL for Azure and Gemini, else the body."""
    path = request.url.path
    if "/openai/deployments/" in path:
        return path.split("/openai/deployments/")[1].split("/")[0]
    if "/models/" in path and ":" in path:
        return path.split("/models/")[1].split(":")[0]
    return str(orjson.loads(request.content)["model"])


def test_settings_are_carried_over():
    config = parse_config(convert_file(DATA / "fallbacks_and_cache.yaml"), ENV)
    assert config.fallbacks == {"gpt-4o": ("claude-sonnet", "gemini-flash"),
                                "gpt-4o-mini": ("gpt-4o",)}
    assert config.context_window_fallbacks == {"gpt-4o": ("gpt-4o-128k",)}
    cache = config.cache
    assert (cache.backend, cache.mode, cache.ttl, cache.namespace, cache.scope) == (
        "redis", "always", 600, "litellm.caching", "shared")
    assert config.redis.url.get_secret_value() == (
        "redis://:value-of-redis_password@redis.internal:6379/0")
    assert [k.get_secret_value() for k in config.server.api_keys] == ["sk-1234"]
    assert config.server.admin_key.get_secret_value() == "sk-1234"
    assert (config.router.strategy, config.router.num_retries, config.router.timeout) == (
        "latency", 2, 120)
    gpt4o = config.group("gpt-4o").deployments[0]
    assert (gpt4o.max_concurrency, gpt4o.timeout) == (20, 45)
    assert config.group("gpt-4o-mini").deployments[0].headers == {
        "OpenAI-Organization": "org-turnout-test"}

    balanced = parse_config(convert_file(DATA / "load_balancing.yaml"), ENV)
    r = balanced.router
    assert (r.strategy, r.num_retries, r.timeout, r.allowed_fails, r.cooldown, r.state) == (
        "weighted", 3, 30, 3, 30, "redis")
    assert balanced.redis.url.get_secret_value() == (
        "redis://:value-of-redis_password@redis.internal:6380/0")
    [eu, _canada, oai] = balanced.group("gpt-3.5-turbo").deployments
    assert (eu.id, eu.provider, eu.base_url, eu.rpm, eu.api_version) == (
        "azure-eu", "azure", "https://my-endpoint-europe.openai.azure.com", 6,
        "2024-02-15-preview")
    assert eu.api_key.get_secret_value() == "value-of-azure_europe_api_key"
    assert (oai.provider, oai.rpm, oai.tpm, oai.weight) == ("openai", 1440, 240000, 3)


def test_what_cannot_be_carried_over_is_a_comment_and_secrets_are_not_shown():
    text = convert_file(DATA / "fallbacks_and_cache.yaml")
    assert "# not carried over: litellm_settings.drop_params = true" in text
    assert "# not carried over: litellm_settings.success_callback" in text
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert "# not carried over: general_settings.database_url (value not shown)" in text
    assert "hunter2" not in text
    hosted = convert_file(DATA / "self_hosted.yaml")
    assert "model group 'bedrock-claude', no deployment Turnout can serve" in hosted
    assert "'llama-3-8b' -> 'bedrock-claude': not a model group here" in hosted
    assert "environment_variables: set these in Turnout's environment instead: VLLM_API_KEY" \
        in hosted
    assert "token-abc123" not in hosted
    balanced = convert_file(DATA / "load_balancing.yaml")
    assert "# not carried over: litellm_params.stream_timeout = 60" in balanced
    assert "router_settings.enable_pre_call_checks = true" in balanced


@pytest.mark.parametrize(("model", "provider", "base_url"), [
    pytest.param("openai/gpt-4o", "openai", "https://api.openai.com/v1", id="openai"),
    pytest.param("gpt-4o", "openai", "https://api.openai.com/v1", id="unprefixed-gpt"),
    pytest.param("claude-3-haiku-20240307", "anthropic", "https://api.anthropic.com",
                 id="unprefixed-claude"),
    pytest.param("anthropic/claude-3-haiku-20240307", "anthropic", "https://api.anthropic.com",
                 id="anthropic"),
    pytest.param("gemini/gemini-1.5-pro", "gemini",
                 "https://generativelanguage.googleapis.com", id="gemini"),
    pytest.param("groq/llama3-8b-8192", "openai", "https://api.groq.com/openai/v1", id="groq"),
    pytest.param("mistral/mistral-small", "openai", "https://api.mistral.ai/v1", id="mistral"),
])
def test_provider_prefixes(model, provider, base_url):
    text = convert({"model_list": [{"model_name": "g", "litellm_params": {"model": model}}]})
    [deployment] = parse_config(text, {k: "x" for k in _key_vars()}).models[0].deployments
    assert (deployment.provider, deployment.base_url) == (provider, base_url)
    assert deployment.model == model.split("/", 1)[-1]


def _key_vars():
    return ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY",
            "MISTRAL_API_KEY"]


def test_ollama_api_base_gets_its_openai_path():
    text = convert({"model_list": [{"model_name": "g", "litellm_params": {
        "model": "ollama/llama3", "api_base": "http://localhost:11434"}}]})
    [deployment] = parse_config(text, {}).models[0].deployments
    assert (deployment.base_url, deployment.api_key) == ("http://localhost:11434/v1", None)


@pytest.mark.parametrize("data", [
    pytest.param([], id="not-a-mapping"),
    pytest.param({"general_settings": {}}, id="no-model-list"),
])
def test_not_a_litellm_config_is_refused(data):
    with pytest.raises(ImportFailed):
        convert(data)


def test_cli_exit_codes(tmp_path):
    broken = tmp_path / "config.yaml"
    broken.write_text("model_list: [unclosed")
    run = subprocess.run([sys.executable, "-m", "router", "import-litellm", str(broken)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2
    assert "invalid YAML" in run.stderr and run.stdout == ""
    missing = subprocess.run([sys.executable, "-m", "router", "import-litellm",
                              str(tmp_path / "nope.yaml")], cwd=ROOT, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_redis_cache_without_host_uses_litellms_redis_variables():
    text = convert({"model_list": [{"model_name": "g", "litellm_params": {
        "model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "redis"}}})
    config = parse_config(text, {"OPENAI_API_KEY": "k", "REDIS_HOST": "cache.internal"})
    assert config.redis.url.get_secret_value() == "redis://:@cache.internal:6379/0"
    assert config.cache.backend == "redis"


def test_two_different_redis_servers_become_one_with_a_comment():
    text = convert({"model_list": [{"model_name": "g", "litellm_params": {
        "model": "openai/gpt-4o", "api_key": "k"}}],
        "router_settings": {"redis_host": "router-redis", "redis_port": 6379},
        "litellm_settings": {"cache": True, "cache_params": {"type": "redis",
                                                             "host": "cache-redis"}}})
    config = parse_config(text, {})
    assert config.redis.url.get_secret_value() == "redis://router-redis:6379/0"
    assert "# not carried over: a second Redis" in text

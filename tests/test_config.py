"""router.toml: parsing, validation (every problem at once, with its TOML path), interpolation."""

from __future__ import annotations

import pytest

from router.config import ConfigError, parse_config, parse_duration

MOCK_GROUP = '[[models]]\nname = "g"\n[[models.deployments]]\nprovider = "mock"\n'
OPENAI_DEP = ('[[models.deployments]]\nprovider = "openai"\nbase_url = "https://x.test/v1"\n'
              'model = "m"\n')


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env or {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[server]\nport = 1\n", "models: required", id="no-models"),
        pytest.param("[[models]]\nname = 'g'\n", "models[0].deployments: required",
                     id="group-without-deployments"),
        pytest.param(MOCK_GROUP + "[server]\nprot = 4000\n", "server.prot: unknown key",
                     id="unknown-key-typo"),
        pytest.param(MOCK_GROUP + "[bogus]\n", "bogus: unknown key", id="unknown-section"),
        pytest.param(MOCK_GROUP.replace('"mock"', '"mock"\nweight = 0'),
                     "models[0].deployments[0].weight: Input should be greater than 0",
                     id="weight-not-positive"),
        pytest.param(MOCK_GROUP.replace('"mock"', '"vertex"'),
                     "models[0].deployments[0].provider: Input should be", id="unknown-provider"),
        pytest.param('[[models]]\nname = "g"\n' + OPENAI_DEP.replace('model = "m"\n', ''),
                     "models[0].deployments[0].model: required for provider 'openai'",
                     id="openai-without-model"),
        pytest.param('[[models]]\nname = "g"\n' + OPENAI_DEP.replace(
            'base_url = "https://x.test/v1"\n', ''),
            "models[0].deployments[0].base_url: required for provider 'openai'",
            id="openai-without-base-url"),
        pytest.param('[[models]]\nname = "g"\n' + OPENAI_DEP.replace("https://x.test/v1", "ftp://x"),
                     "models[0].deployments[0].base_url: must be an http",
                     id="base-url-scheme"),
        pytest.param('[[models]]\nname = "g"\n' + OPENAI_DEP + 'api_version = "2024-10-21"\n',
                     "models[0].deployments[0].api_version: only for provider 'azure'",
                     id="api-version-outside-azure"),
        pytest.param(MOCK_GROUP + '[fallbacks]\n"g" = ["nope"]\n',
                     "fallbacks.g[0]: no model group named 'nope'", id="fallback-to-unknown"),
        pytest.param(MOCK_GROUP + '[context_window_fallbacks]\n"x" = ["g"]\n',
                     "context_window_fallbacks.x: no model group named 'x'",
                     id="context-fallback-from-unknown"),
        pytest.param(MOCK_GROUP + '[cache]\nbackend = "redis"\n',
                     "cache.backend: 'redis' needs a [redis] table with a url",
                     id="redis-cache-without-redis"),
        pytest.param(MOCK_GROUP + '[router]\nstate = "redis"\n',
                     "router.state: 'redis' needs a [redis] table with a url",
                     id="redis-state-without-redis"),
        pytest.param(MOCK_GROUP + '[router]\ncooldown = "5 minutes"\n',
                     "router.cooldown: must be a duration", id="bad-duration"),
        pytest.param(MOCK_GROUP + '[router]\nstrategy = "random"\n',
                     "router.strategy: Input should be", id="unknown-strategy"),
        pytest.param(MOCK_GROUP + MOCK_GROUP, "models[1].name: duplicate model group 'g'",
                     id="duplicate-group"),
        pytest.param(MOCK_GROUP + '[cache]\nmode = "sometimes"\n', "cache.mode: Input should be",
                     id="unknown-cache-mode"),
        pytest.param(MOCK_GROUP + '[redis]\nurl = "http://x"\n',
                     "redis.url: must be a redis://", id="redis-url-scheme"),
        pytest.param(MOCK_GROUP + '[server]\nport = 70000\n', "server.port: Input should be less",
                     id="port-range"),
        pytest.param(MOCK_GROUP + 'x = [1\n', "router.toml: invalid TOML", id="invalid-toml"),
    ],
)
def test_bad_config_names_the_problem_and_its_path(text, expected):
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once():
    text = ('[server]\nprot = 1\n[router]\nnum_retries = -1\n' + MOCK_GROUP +
            '[fallbacks]\n"g" = ["missing"]\n')
    problems = problems_of(text)
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {
        "server.prot", "router.num_retries", "fallbacks.g[0]"}


def test_duplicate_deployment_ids_are_refused():
    text = MOCK_GROUP.replace('"mock"', '"mock"\nid = "x"') * 1
    text += '[[models]]\nname = "h"\n[[models.deployments]]\nprovider = "mock"\nid = "x"\n'
    assert "models[1].deployments[0].id: duplicate deployment id 'x'" in problems_of(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(5, 5.0), (0.5, 0.5), ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
     ("2", 2.0), ("1.5s", 1.5)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["-1s", "5 minutes", "", True, "1d", None])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_environment_is_interpolated_with_defaults():
    text = ('[server]\napi_keys = ["${KEY_A}", "${KEY_B:-}", "${KEY_C:-fallback}"]\n'
            'admin_key = "${ADMIN:-}"\n' + '[[models]]\nname = "g"\n' +
            OPENAI_DEP.replace('"https://x.test/v1"', '"${BASE:-http://local:8000}/v1"'))
    config = parse_config(text, {"KEY_A": "ka"})
    assert [k.get_secret_value() for k in config.server.api_keys] == ["ka", "fallback"]
    assert config.server.admin_key is None
    assert config.models[0].deployments[0].base_url == "http://local:8000/v1"


def test_unset_variable_without_default_is_an_error_naming_it():
    text = '[[models]]\nname = "g"\n' + OPENAI_DEP + 'api_key = "${OPENAI_API_KEY}"\n'
    assert problems_of(text) == [
        "models[0].deployments[0].api_key: environment variable OPENAI_API_KEY is not set"]


def test_deployment_ids_default_to_group_and_index():
    text = MOCK_GROUP + '[[models.deployments]]\nprovider = "mock"\nid = "named"\n'
    text += '[[models.deployments]]\nprovider = "mock"\n'
    config = parse_config(text, {})
    assert [d.id for d in config.models[0].deployments] == ["g/0", "named", "g/2"]


def test_defaults_match_the_contract():
    config = parse_config(MOCK_GROUP, {})
    assert config.server.port == 4000 and config.server.host == "127.0.0.1"
    assert config.server.max_body_bytes == 10_485_760
    assert config.server.request_timeout == 600 and config.server.shutdown_grace == 30
    assert config.cache.backend == "memory" and config.cache.mode == "opt-in"
    assert config.cache.ttl == 3600 and config.cache.scope == "per-key"
    assert config.cache.max_entries == 10_000 and config.cache.coalesce is True
    assert config.router.strategy == "weighted" and config.router.num_retries == 2
    assert config.router.retry_backoff == 0.1 and config.router.allowed_fails == 3
    assert config.router.cooldown == 30 and config.router.timeout == 60
    assert config.router.state == "local" and config.router.hedge_after == 0


def test_secrets_do_not_appear_in_repr():
    text = ('[server]\napi_keys = ["client-secret"]\nadmin_key = "admin-secret"\n'
            '[redis]\nurl = "redis://:redis-pass@127.0.0.1:6379/0"\n[[models]]\nname = "g"\n'
            + OPENAI_DEP + 'api_key = "sk-upstream"\n')
    config = parse_config(text, {})
    shown = repr(config) + str(config.model_dump())
    for secret in ("client-secret", "admin-secret", "redis-pass", "sk-upstream"):
        assert secret not in shown
    assert set(config.secrets()) == {"client-secret", "admin-secret", "redis-pass", "sk-upstream"}
    assert config.redis is not None
    assert config.redis.display_url() == "redis://:***@127.0.0.1:6379/0"


def test_config_is_frozen():
    config = parse_config(MOCK_GROUP, {})
    with pytest.raises(ValueError):
        config.server.port = 1  # type: ignore[misc]


def test_repo_router_toml_is_valid_without_environment():
    from tests.support import ROOT

    config = parse_config((ROOT / "router.toml").read_text(), {})
    assert config.cache.backend == "memory"
    assert all(d.provider == "mock" for g in config.models for d in g.deployments)
    assert config.redis is None

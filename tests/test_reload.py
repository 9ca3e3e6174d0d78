"""reload_config in-process: the swap, the refusals, and when the old gateway is closed."""

from __future__ import annotations

import asyncio
import logging

import httpx

from router.app import create_app
from router.lifecycle import reload_config
from tests.support import config_from


def mock_config(reply: str, extra: str = "") -> str:
    return (f'[[models]]\nname = "m"\n[[models.deployments]]\nprovider = "mock"\n'
            f'mock_response = "{reply}"\n{extra}')


async def test_old_gateway_is_closed_only_after_its_last_request(tmp_path):
    path = tmp_path / "router.toml"
    path.write_text(mock_config("after"))
    app = create_app(config_from(mock_config("before")))
    async with app.router.lifespan_context(app):
        old = app.state.gateway
        closed = asyncio.Event()
        real_aclose = old.aclose

        async def recording_aclose() -> None:
            closed.set()
            await real_aclose()

        old.aclose = recording_aclose
        app.state.leases.acquire(old)  # a request (or stream) still in flight on it
        assert await reload_config(app, str(path))
        assert app.state.gateway is not old
        assert app.state.gateway.config.models[0].deployments[0].mock_response == "after"
        await asyncio.sleep(0.05)
        assert not closed.is_set()
        app.state.leases.release(old)
        await asyncio.wait_for(closed.wait(), 2)
        assert old not in app.state.retired_gateways


async def test_requests_after_a_reload_use_the_new_config_and_leave_no_lease(tmp_path):
    path = tmp_path / "router.toml"
    path.write_text(mock_config("after"))
    app = create_app(config_from(mock_config("before")))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        before = await client.post("/v1/chat/completions", json=body)
        old = app.state.gateway
        await reload_config(app, str(path))
        after = await client.post("/v1/chat/completions", json=body)
        assert app.state.leases.inflight(old) == 0
        assert app.state.leases.inflight(app.state.gateway) == 0
    assert before.json()["choices"][0]["message"]["content"] == "before"
    assert after.json()["choices"][0]["message"]["content"] == "after"


async def test_invalid_config_is_refused_and_logged_with_its_problems(tmp_path, caplog):
    path = tmp_path / "router.toml"
    path.write_text(mock_config("after").replace("mock_response", "mock_reponse"))
    app = create_app(config_from(mock_config("before")))
    async with app.router.lifespan_context(app):
        old = app.state.gateway
        with caplog.at_level(logging.INFO, logger="turnout.events"):
            assert not await reload_config(app, str(path))
        assert app.state.gateway is old
    record = next(r for r in caplog.records if getattr(r, "event", None) == "config_reload_failed")
    assert any("mock_reponse: unknown key" in p for p in record.problems)


async def test_missing_file_is_refused(tmp_path):
    app = create_app(config_from(mock_config("before")))
    async with app.router.lifespan_context(app):
        old = app.state.gateway
        assert not await reload_config(app, str(tmp_path / "gone.toml"))
        assert app.state.gateway is old


async def test_a_changed_redis_section_takes_a_restart(tmp_path, caplog):
    path = tmp_path / "router.toml"
    path.write_text(mock_config("after", '[redis]\nurl = "redis://127.0.0.1:1/0"\n'
                                         '[cache]\nbackend = "redis"\n'))
    app = create_app(config_from(mock_config("before")))
    async with app.router.lifespan_context(app):
        old = app.state.gateway
        with caplog.at_level(logging.INFO, logger="turnout.events"):
            assert not await reload_config(app, str(path))
        assert app.state.gateway is old
    assert "takes a restart" in caplog.text

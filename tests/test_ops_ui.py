"""The /ui status page: served from local files, and driven in a real headless chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from router.ui import STATIC_DIR
from tests.support import ROOT, app_client, config_from, turnout_process

ARTIFACTS = ROOT / "tests" / "artifacts"
ADMIN_KEY = "ui-admin-key-0123456789"
CONFIG = f"""
[server]
admin_key = "{ADMIN_KEY}"

[[models]]
name = "chat"
  [[models.deployments]]
  id = "mock-fast"
  provider = "mock"
  weight = 3
  [[models.deployments]]
  id = "mock-slow"
  provider = "mock"
  mock_latency = "20ms"

[[models]]
name = "embed"
  [[models.deployments]]
  id = "mock-embed"
  provider = "mock"
"""
# Debian's chromium, headless, with nothing that reaches the network on its own.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


async def test_page_loads_without_a_key_and_only_from_turnout():
    async with app_client(config_from(CONFIG)) as client:
        page = await client.get("/ui")
        script = await client.get("/ui/static/ui.js")
        status = await client.get("/admin/status")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200
    assert status.status_code == 401  # the page holds nothing; its data needs the key
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path.name
        assert "http://" not in text and "https://" not in text, path.name


def chromium_path() -> str:
    """Debian's chromium, installed with apt when this machine lacks it."""
    found = shutil.which("chromium")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


@pytest.mark.e2e
@pytest.mark.timeout(900)  # a fresh machine installs chromium first; the test itself is ~15 s
def test_status_page_in_headless_chromium(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with (turnout_process(CONFIG, tmp_path) as base, sync_playwright() as playwright,
          httpx.Client(base_url=base) as client):
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1000})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(
                f"console: {message.text} at {message.location.get('url')}")
                if message.type == "error" else None)
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)

            page.goto(f"{base}/ui?interval_ms=300")
            page.wait_for_selector("#login", state="visible")
            assert page.is_hidden("#status")

            page.fill("#key", "not-the-admin-key")
            page.click("#login button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("refused")
            page.fill("#key", ADMIN_KEY)
            page.click("#login button[type=submit]")
            page.wait_for_selector("#status", state="visible")
            for deployment in ("mock-fast", "mock-slow", "mock-embed"):
                page.wait_for_selector(f"tr.deployment[data-id='{deployment}']")
            assert page.text_content("section[data-group='chat'] h2").startswith("chat")
            assert page.text_content("#total-requests") == "0"
            assert "3 / 3" in page.text_content("#total-healthy")

            for i in range(24):
                chat = {"model": "chat", "messages": [{"role": "user", "content": f"hi {i}"}]}
                assert client.post("/v1/chat/completions", json=chat).status_code == 200
            for _ in range(6):
                embed = {"model": "embed", "input": "hello"}
                assert client.post("/v1/embeddings", json=embed).status_code == 200
            expect(page.locator("#total-requests")).to_have_text("30")
            expect(page.locator("tr[data-id='mock-embed'] td[data-attempts]")
                   ).to_have_attribute("data-attempts", "6")
            fast = int(page.get_attribute("tr[data-id='mock-fast'] td[data-attempts]",
                                          "data-attempts"))
            slow = int(page.get_attribute("tr[data-id='mock-slow'] td[data-attempts]",
                                          "data-attempts"))
            assert fast + slow == 24
            assert page.text_content("#total-latency").endswith(" ms")

            page.reload()  # the key stays for the tab's session
            page.wait_for_selector("#status", state="visible")
            assert page.is_hidden("#login")
            expect(page.locator("#total-requests")).to_have_text("30")

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)

            # A deployment cooling down, as the router reports it, is shown with its time left.
            status = client.get("/admin/status",
                                headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
            slow = next(d for d in status["deployments"] if d["id"] == "mock-slow")
            # The router's shape: seconds left, and the recent failures with their reasons.
            slow.update(state="cooling down", cooling_down_for=20.0, in_flight=2,
                        latency_estimate=0.25, recent_failures=[
                            {"seconds_ago": 1.5, "reason": "answered 503"}] * 4)
            status["cache"] = {"enabled": True, "backend": "memory", "hit_ratio": 0.75,
                               "lookups": {"hit": 3, "miss": 1}}
            page.route("**/admin/status", lambda route: route.fulfill(json=status))
            badge = page.locator("tr[data-id='mock-slow'] .badge")
            expect(badge).to_contain_text("cooling down")
            assert re.search(r"1\d s left|20 s left", badge.text_content())
            assert "cooling" in badge.get_attribute("class")
            row = page.locator("tr[data-id='mock-slow']")
            expect(row).to_contain_text("recent failures: 4")
            expect(row).to_contain_text("in flight: 2")
            expect(row).to_contain_text("latency estimate: 250 ms")
            assert row.locator(".extra").get_attribute("title") == "last failure: answered 503"
            expect(page.locator("#total-healthy")).to_have_text("2 / 3")
            expect(page.locator("#cache")).to_contain_text("lookups hit3")
            expect(page.locator("#cache")).to_contain_text("hit ratio75 %")
            page.screenshot(path=str(ARTIFACTS / "ui-cooldown.png"), full_page=True)
        finally:
            browser.close()
    # Chrome reports each 401 the page is designed to get (no key, then a wrong key) as a
    # failed resource load; nothing else may reach the console.
    unexpected = [p for p in problems
                  if not ("status of 401" in p and p.endswith("/admin/status"))]
    assert unexpected == []
    assert Path(ARTIFACTS / "ui.png").stat().st_size > 10_000

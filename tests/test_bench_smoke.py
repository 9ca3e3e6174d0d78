"""The benchmark harness keeps working: its smoke mode runs every scenario end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench import profile, report
from bench.fake_upstream import content_length
from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_smoke_run_measures_every_scenario_and_rewrites_nothing(tmp_path):
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    raw = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--json", str(raw)],
                          cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = orjson.loads(raw.read_bytes())
    by_name = {s["name"]: s for s in results["scenarios"]}
    assert list(by_name) == [s.name for s in SCENARIOS]
    assert all(s["requests"] > 0 for s in by_name.values())
    for name in ("direct", "proxied", "memory-cache", "redis-cache", "streaming"):
        assert by_name[name]["errors"] == 0, name
    assert by_name["streaming"]["probe"]["content_type"] == "text/event-stream"
    for turnout in results["turnouts"].values():
        assert 0 < turnout["ready_seconds"] < 30
        assert turnout["rss_mb"] > 0
    assert "| proxied, no cache |" in done.stdout
    assert "Not judged in smoke mode." in done.stdout
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before


def scenario(expects: str, probe: dict[str, object], status_errors: int = 0) -> dict[str, object]:
    return {"expects": expects, "probe": probe, "status_errors": status_errors,
            "requests": 100, "turnout": "memory"}


OK = {"statuses": [200, 200], "cache": "hit", "content_type": "application/json"}


@pytest.mark.parametrize(
    ("case", "valid", "says"),
    [
        pytest.param(scenario("cache-hit", OK), True, "cache hits", id="hit"),
        pytest.param(scenario("cache-hit", {**OK, "cache": "bypass"}), False, "not cache hits",
                     id="cache-absent-is-not-called-a-hit"),
        pytest.param(scenario("stream", {**OK, "content_type": "text/event-stream"}), True,
                     "SSE", id="stream"),
        pytest.param(scenario("stream", OK), False, "not a stream", id="json-is-not-a-stream"),
        pytest.param(scenario("failover", OK, status_errors=25), False, "25 error answers",
                     id="failover-errors-reached-clients"),
        pytest.param(scenario("failover", OK), True, "no failed call", id="failover-clean"),
        pytest.param(scenario("answer", {**OK, "statuses": [200, 502]}), False,
                     "not a valid measurement", id="probe-failed"),
    ],
)
def test_report_labels_what_was_really_measured(case, valid, says):
    what, ok = report.measured(case)
    assert ok is valid
    assert says in what


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 12", 12, id="length"),
        pytest.param(b"GET /health HTTP/1.1\r\nhost: x", 0, id="absent"),
        pytest.param(b"POST / HTTP/1.1\r\ncontent-length: x1", None, id="malformed"),
        pytest.param(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked", None, id="chunked"),
    ],
)
def test_fake_upstream_reads_content_length(head, expected):
    assert content_length(head) == expected


@pytest.mark.parametrize(
    ("stack", "layer"),
    [
        pytest.param("run (uvicorn/main.py:1);Logger.info (logging/__init__.py:2)",
                     profile.LOGGING, id="logging-first"),
        pytest.param("run (uvicorn/main.py:1);parse_chat (/x/router/inbound.py:9)",
                     "Turnout: inbound (auth, body, validation)", id="innermost-layer"),
        pytest.param("run (uvicorn/main.py:1);Runner.run (asyncio/runners.py:3)",
                     profile.EVENT_LOOP, id="event-loop"),
    ],
)
def test_profile_charges_samples_to_layers(stack, layer):
    assert profile.rank(f"{stack} 3\n") == [(layer, 1.0)]


def test_profile_leaves_out_the_log_writer_waiting():
    waiting = "run (threading.py:1);QueueListener.dequeue (logging/handlers.py:2) 5\n"
    working = "run (uvicorn/main.py:1);parse_chat (/x/router/inbound.py:9) 1\n"
    assert profile.rank(waiting + working) == [("Turnout: inbound (auth, body, validation)", 1.0)]

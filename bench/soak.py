"""Soak: mixed traffic against a real `turnout serve` for a while, sampling its resources.

    python -m bench.soak --duration 600 --interval 60 [--report bench/SOAK.md]

Starts a fake upstream and Turnout (instrumented with a task count), then drives cache
hits and misses, streams, upstream failures (which the router must absorb: a flaky
deployment beside a healthy one, a dead group with a fallback) and client errors from a
few concurrent clients. Every `interval` it samples RSS, open file descriptors and asyncio tasks.
Requests whose answer is not what the contract promises (a 500, a transport error, a
timeout, a wrong status) count as failures. Results are appended to the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.procs import Turnout, turnout
from tests.support import FakeUpstreamProcess, fake_upstream_process, free_port

INSTRUMENTED = [sys.executable, "-m", "tests.fakes.instrumented"]
CLIENTS = 6


def config(upstream: str, flaky: str, dead: str) -> str:
    return f"""
[server]
shutdown_grace = "5s"

[cache]
mode = "opt-in"
# Small enough that misses fill it early in the run: growth after that would be a leak.
max_entries = 1000

[router]
retry_backoff = "10ms"

[[models]]
name = "up"
  [[models.deployments]]
  provider = "openai"
  base_url = "{upstream}"
  api_key = "sk-soak"
  model = "up"

[[models]]
name = "flaky"
  [[models.deployments]]
  provider = "openai"
  base_url = "{flaky}"
  api_key = "sk-soak"
  model = "flaky"
  [[models.deployments]]
  provider = "openai"
  base_url = "{upstream}"
  api_key = "sk-soak"
  model = "up"

[[models]]
name = "down"
  [[models.deployments]]
  provider = "openai"
  base_url = "{dead}"
  api_key = "sk-soak"
  model = "down"

[[models]]
name = "mock"
  [[models.deployments]]
  provider = "mock"

[fallbacks]
"down" = ["up"]
"""


@dataclass
class Sample:
    elapsed: float
    rss_kib: int
    fds: int
    tasks: int


@dataclass
class Tally:
    sent: int = 0
    faults: int = 0
    failures: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    failure_examples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.failures += 1
        if len(self.failure_examples) < 10:
            self.failure_examples.append(what)


def chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def one_request(client: httpx.AsyncClient, upstream: FakeUpstreamProcess,
                      rng: random.Random, tally: Tally) -> None:
    kind = rng.choice(["hit", "miss", "stream", "upstream_failure", "dead_upstream",
                       "client_error", "mock_stream", "embedding"])
    tally.sent += 1
    tally.kinds[kind] += 1
    expected = 200
    stream = False
    if kind == "hit":
        body = chat("mock", f"repeat {rng.randrange(5)}", caching=True)
    elif kind == "miss":
        body = chat("up", f"fresh {rng.random()}", caching=True)
    elif kind == "stream":
        body, stream = chat("up", "stream please", stream=True), True
    elif kind == "mock_stream":
        body, stream = chat("mock", "stream please", stream=True, caching=True), True
    elif kind == "embedding":
        body = {"model": "mock", "input": [f"text {rng.randrange(50)}"]}
    elif kind == "upstream_failure":
        # The flaky deployment answers its next call with a 500; the router must retry on
        # the group's healthy deployment, so the client still gets its answer.
        await asyncio.to_thread(upstream.script, {"status": 500})
        tally.faults += 1
        body = chat("flaky", "fail please")
    elif kind == "dead_upstream":
        # Nothing listens there (connection refused): the group falls back to "up".
        tally.faults += 1
        body = chat("down", "fail please")
    else:
        body, expected = {"model": "mock", "messages": "not a list"}, 400
    path = "/v1/embeddings" if kind == "embedding" else "/v1/chat/completions"
    try:
        if stream:
            async with client.stream("POST", path, json=body) as response:
                text = (await response.aread()).decode()
            if response.status_code != 200 or not text.rstrip().endswith("data: [DONE]"):
                tally.fail(f"{kind}: {response.status_code} {text[-120:]!r}")
            return
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        tally.fail(f"{kind}: {type(exc).__name__}")
        return
    if response.status_code != expected:
        tally.fail(f"{kind}: {response.status_code} {response.text[:120]!r}")


async def client_loop(server: Turnout, upstream: FakeUpstreamProcess, seed: int,
                      until: float, tally: Tally) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        while time.monotonic() < until:
            await one_request(client, upstream, rng, tally)


async def sampler(server: Turnout, started: float, until: float, interval: float,
                  samples: list[Sample]) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        while True:
            counts = (await client.get("/_debug/counts")).json()
            samples.append(Sample(time.monotonic() - started, server.rss_kib(),
                                  server.open_fds(), counts["tasks"]))
            if time.monotonic() >= until:
                return
            await asyncio.sleep(min(interval, max(0.0, until - time.monotonic())))


@contextlib.contextmanager
def soak_servers(workdir: Path) -> Iterator[tuple[Turnout, FakeUpstreamProcess]]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with fake_upstream_process() as upstream, fake_upstream_process() as flaky, \
            turnout(config(upstream.url, flaky.url, dead), workdir, module=INSTRUMENTED) as server:
        yield server, flaky


async def run(server: Turnout, upstream: FakeUpstreamProcess, duration: float,
              interval: float) -> tuple[Tally, list[Sample]]:
    samples: list[Sample] = []
    started = time.monotonic()
    until = started + duration
    tally = Tally()
    traffic = asyncio.gather(*(client_loop(server, upstream, seed, until, tally)
                               for seed in range(CLIENTS)))
    await asyncio.gather(traffic, sampler(server, started, until, interval, samples))
    return tally, samples


def report(tally: Tally, samples: list[Sample], duration: float) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.kinds.items()))
    lines = [f"## Soak, {when}: {duration:g} s, {CLIENTS} clients", "",
             f"Requests sent: {tally.sent} ({kinds}); upstream faults injected: "
             f"{tally.faults}; failures: {tally.failures}.", "",
             "| elapsed (s) | RSS (MiB) | open fds | asyncio tasks |", "| --- | --- | --- | --- |"]
    lines += [f"| {s.elapsed:.0f} | {s.rss_kib / 1024:.1f} | {s.fds} | {s.tasks} |"
              for s in samples]
    if tally.failure_examples:
        lines += ["", "Failures:", *(f"- {f}" for f in tally.failure_examples)]
    return "\n".join(lines) + "\n\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--interval", type=float, default=60)
    parser.add_argument("--report", type=Path, default=Path("bench/SOAK.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, soak_servers(Path(workdir)) as (server, up):
        tally, samples = asyncio.run(run(server, up, args.duration, args.interval))
    text = report(tally, samples, args.duration)
    if not args.report.exists():
        args.report.write_text("# Soak results\n\nAppended by `make soak` (bench/soak.py).\n\n")
    with args.report.open("a") as out:
        out.write(text)
    print(text)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())

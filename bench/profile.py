"""Where a scenario's time goes: py-spy samples Turnout under wrk, ranked by layer, in µs.

`python -m bench.profile proxied streaming` (needs `pip install py-spy`): for each
scenario, starts the fake upstream and a Turnout pinned as in bench.run, warms up, then
samples Turnout with py-spy while wrk drives it, and prints each layer's share of the
samples times the CPU per request measured in the same window. `--raw DIR` keeps py-spy's
collapsed stacks (one `frame;frame;… count` line per stack) for a closer look.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import run
from bench.scenarios import SCENARIOS, turnout_config

# A sample is charged to the first rule that matches its stack (outermost concerns first),
# else to the innermost frame's layer.
StackRule = tuple[str, Callable[[list[str]], bool]]
LOGGING = "logging (the access line: record, queue; the writer thread formats and writes)"
STACK_RULES: list[StackRule] = [
    (LOGGING, lambda fs: any("logging/" in f for f in fs)),
    ("httpx: cookie jar on every response", lambda fs: any("extract_cookies" in f for f in fs)),
    ("httpx: build_request (URL parse, header and cookie merge)",
     lambda fs: any("build_request" in f for f in fs)),
    ("reading the upstream SSE (httpx_sse, text decoding, aiohttp reads)",
     lambda fs: any("httpx_sse" in f for f in fs)),
    ("aiohttp transport (httpx-aiohttp, aiohttp)", lambda fs: any("aiohttp" in f for f in fs)),
    ("httpcore transport (httpcore, h11, anyio)", lambda fs: any("httpcore" in f for f in fs)),
]
LAYERS = [
    ("uvicorn/", "uvicorn: HTTP parsing (httptools), ASGI glue, socket writes"),
    ("starlette/responses.py", "Starlette: Response / StreamingResponse (anyio task group)"),
    ("anyio/", "Starlette: Response / StreamingResponse (anyio task group)"),
    ("starlette/", "Starlette: middleware, routing, Request"),
    ("httpx/", "httpx: send machinery, Request/Response/Headers objects"),
    ("prometheus_client/", "prometheus_client"),
    ("redis/", "redis-py (the cache's GET)"),
    ("router/logs", "Turnout: access-log middleware (ids, headers, metrics, traffic)"),
    ("router/traffic", "Turnout: access-log middleware (ids, headers, metrics, traffic)"),
    ("router/lifecycle", "Turnout: gateway pinning"),
    ("router/caching", "Turnout: cache (policy, key, entry, store)"),
    ("cache/", "Turnout: cache (policy, key, entry, store)"),
    ("router/tracing", "Turnout: attempt timing (tracing.InstrumentedProvider)"),
    ("router/serving", "uvicorn: HTTP parsing (httptools), ASGI glue, socket writes"),
    ("router/inbound", "Turnout: inbound (auth, body, validation)"),
    ("router/providers", "Turnout: providers (payload, SSE relay)"),
    ("router/dispatch", "Turnout: dispatch"),
    ("router/streaming", "Turnout: SSE framing, masking"),
    ("router/masking", "Turnout: SSE framing, masking"),
    ("router/", "Turnout: endpoints, gateway, metrics"),
]
EVENT_LOOP = "event loop (uvloop: epoll, socket reads, task switches)"
FRAME = re.compile(r"(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def layer_of(frames: list[str]) -> str:
    for name, matches in STACK_RULES:
        if matches(frames):
            return name
    if frames and frames[-1].split(" (")[0] == "Runner.run":
        return EVENT_LOOP
    for frame in reversed(frames):
        match = FRAME.match(frame)
        path = match.group("file") if match else frame
        for marker, name in LAYERS:
            if marker in path:
                return name
    return "other"


# Threads that wait on a queue show in py-spy's samples as if they ran: the log writer
# blocked in SimpleQueue.get is not CPU time and is left out.
IDLE_FRAMES = ("QueueListener.dequeue",)


def rank(collapsed: str) -> list[tuple[str, float]]:
    """Each layer's share of the samples, largest first (idle waits left out)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            if any(idle in frame for frame in frames for idle in IDLE_FRAMES):
                continue
            counts[layer_of(frames)] += int(count)
    total = sum(counts.values()) or 1
    return [(name, n / total) for name, n in counts.most_common()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of Turnout under wrk")
    parser.add_argument("scenarios", nargs="+", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("bench.profile needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    wrk = run.require_binary("wrk", "wrk")
    pins = run.core_pins()
    settings = run.Settings(duration=args.duration, warmup=1, reps=1, connections=32,
                            max_requests=None, smoke=False)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="turnout-prof-")))
        upstream = stack.enter_context(run.fake_upstream(pins["helpers"], work))
        redis = stack.enter_context(run.redis_server(
            run.require_binary("redis-server", "redis-server"), pins["helpers"], work))
        turnouts = {b: stack.enter_context(run.turnout(b, turnout_config(b, upstream, redis),
                                                       pins["turnout"], work))
                    for b in ("memory", "redis")}
        for name in args.scenarios:
            scenario = next(s for s in SCENARIOS if s.name == name)
            if scenario.turnout is None:
                print(f"{name}: nothing to profile (no Turnout in the path)")
                continue
            pid = turnouts[scenario.turnout].process.pid
            run.load(wrk, scenario, settings, upstream, turnouts, work, pins, 1)
            raw = (args.raw or work) / f"{name}.collapsed"
            raw.parent.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([pyspy, "record", "-p", str(pid), "-r", "250", "-f", "raw",
                                    "-d", str(args.duration), "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = run.load(wrk, scenario, settings, upstream, turnouts, work, pins,
                              args.duration)
            spy.wait(timeout=args.duration + 30)
            per_request = result["turnout_cpu_seconds"] / max(1, result["requests"]) * 1e6
            rate = result["requests"] / (result["duration_us"] / 1e6)
            print(f"\n{name}: {rate:,.0f} req/s, Turnout CPU {per_request:,.0f} µs per request")
            for layer, share in rank(raw.read_text()):
                print(f"  {share:6.1%}  {share * per_request:7.1f} µs  {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

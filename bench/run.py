"""The benchmark runner: Turnout against a fake upstream under wrk, pinned, repeated, reported.

`python -m bench.run` (what `make bench` runs) measures every scenario and rewrites
bench/RESULTS.md; `python -m bench.run --smoke` (`make bench-smoke`, and CI) runs each
scenario for a few hundred requests to prove the harness works, and writes nothing there.

Layout on a machine with 2 cores or more: Turnout (one worker) on core 0; the fake
upstream, redis-server and wrk on core 1. Repetitions are interleaved (each repetition
runs every scenario once) so that a noisy neighbour spreads over all scenarios alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import report
from bench.scenarios import CLIENT_KEY, SCENARIOS, Scenario, turnout_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POST_LUA = HERE / "post.lua"


@dataclasses.dataclass
class Settings:
    duration: int
    warmup: int
    reps: int
    connections: int
    max_requests: int | None
    smoke: bool


@dataclasses.dataclass
class Turnout:
    """One running `turnout serve`: its URL, process and start-to-ready time."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    ready_seconds: float
    rss_mb: float = 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Turnout's benchmark harness")
    parser.add_argument("--smoke", action="store_true",
                        help="every scenario at once for 1 s, a few hundred requests each, to "
                        "prove the harness works; RESULTS.md is not rewritten")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per scenario")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    settings = Settings(
        duration=1 if args.smoke else args.duration,
        warmup=0 if args.smoke else args.warmup,
        reps=1 if args.smoke else args.reps,
        connections=4 if args.smoke else args.connections,
        max_requests=50 if args.smoke else None,
        smoke=args.smoke,
    )
    chosen = set(args.only.split(",")) if args.only else None
    scenarios = [s for s in SCENARIOS
                 if chosen is None or s.name in chosen or s.name.startswith("direct")]
    results = run(settings, scenarios)
    text = report.render(results)
    print(text)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if not settings.smoke and chosen is None:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run(settings: Settings, scenarios: list[Scenario]) -> dict[str, Any]:
    wrk = require_binary("wrk", "wrk")
    redis_bin = os.environ.get("REDIS_SERVER_BIN") or require_binary("redis-server",
                                                                      "redis-server")
    pins = core_pins()
    started_at = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="turnout-bench-")))
        upstream_url = stack.enter_context(fake_upstream(pins["helpers"], work))
        redis_url = stack.enter_context(redis_server(redis_bin, pins["helpers"], work))
        turnouts = {
            backend: stack.enter_context(
                turnout(backend, turnout_config(backend, upstream_url, redis_url),
                        pins["turnout"], work))
            for backend in needed_backends(scenarios)
        }
        labels = {s.name: probe(s, upstream_url, turnouts) for s in scenarios}
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in scenarios}
        for s in scenarios:
            if settings.warmup:
                load(wrk, s, settings, upstream_url, turnouts, work, pins, settings.warmup)
        for _ in range(settings.reps):
            if settings.smoke:
                # The smoke proves the harness works, not how fast Turnout is: all at once.
                with ThreadPoolExecutor(len(scenarios)) as pool:
                    futures = {s.name: pool.submit(load, wrk, s, settings, upstream_url,
                                                   turnouts, work, pins, settings.duration)
                               for s in scenarios}
                for name, future in futures.items():
                    runs[name].append(future.result())
                continue
            for s in scenarios:
                runs[s.name].append(
                    load(wrk, s, settings, upstream_url, turnouts, work, pins, settings.duration))
        for t in turnouts.values():
            t.rss_mb = rss_mb(t.process.pid)
    return {
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "pinned": pins["pinned"],
        "settings": dataclasses.asdict(settings),
        "turnouts": {name: {"ready_seconds": t.ready_seconds, "rss_mb": t.rss_mb}
                     for name, t in turnouts.items()},
        "scenarios": [summarise(s, runs[s.name], labels[s.name]) for s in scenarios],
    }


def needed_backends(scenarios: list[Scenario]) -> list[str]:
    return sorted({s.turnout for s in scenarios if s.turnout is not None})


def load(wrk: str, s: Scenario, settings: Settings, upstream_url: str,
         turnouts: dict[str, Turnout], work: Path, pins: dict[str, Any],
         duration: int) -> dict[str, Any]:
    """One wrk run of scenario `s`; wrk's counters as a dict."""
    url = target_url(s, upstream_url, turnouts)
    body = work / f"{s.name}.json"
    body.write_bytes(orjson.dumps(s.body))
    connections = s.connections or settings.connections
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_AUTH": CLIENT_KEY}
    if settings.max_requests:
        env["BENCH_MAX_REQUESTS"] = str(settings.max_requests)
    command = [*pins["helpers_prefix"], wrk, "-t1", f"-c{connections}", f"-d{duration}s",
               "--timeout", "10s", "-s", str(POST_LUA), url]
    pid = turnouts[s.turnout].process.pid if s.turnout is not None else None
    cpu_before = cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=duration + 30, check=False)
    cpu = cpu_seconds(pid) - cpu_before if pid else None
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = orjson.loads(line.removeprefix("BENCH_RESULT "))
            result["turnout_cpu_seconds"] = cpu
            return result
    raise RuntimeError(f"wrk gave no result for {s.name}: {done.stdout}\n{done.stderr}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far.

    Per request, this is the number least disturbed by other work on a shared machine:
    req/s falls when a neighbour takes the core, the CPU spent on each request hardly moves.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def target_url(s: Scenario, upstream_url: str, turnouts: dict[str, Turnout]) -> str:
    base = upstream_url if s.turnout is None else f"{turnouts[s.turnout].url}/v1"
    return f"{base}/chat/completions"


def probe(s: Scenario, upstream_url: str, turnouts: dict[str, Turnout]) -> dict[str, Any]:
    """What this build does for `s`: two identical requests; the second one's headers."""
    url = target_url(s, upstream_url, turnouts)
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    statuses = []
    with httpx.Client(timeout=10) as client:
        for _ in range(2):
            response = client.post(url, content=orjson.dumps(s.body), headers=headers)
            statuses.append(response.status_code)
    return {
        "statuses": statuses,
        "cache": response.headers.get("x-turnout-cache"),
        "attempts": response.headers.get("x-turnout-attempts"),
        "content_type": response.headers.get("content-type", "").split(";")[0],
    }


def summarise(s: Scenario, runs: list[dict[str, Any]], label: dict[str, Any]) -> dict[str, Any]:
    rates = [r["requests"] / (r["duration_us"] / 1e6) for r in runs]
    errors = sum(r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_status"]
                 + r["errors_timeout"] for r in runs)
    return {
        "name": s.name,
        "title": s.title,
        "turnout": s.turnout,
        "connections": s.connections,
        "expects": s.expects,
        "probe": label,
        "runs": runs,
        "rps": rates,
        "rps_mean": statistics.fmean(rates),
        "rps_cv": statistics.stdev(rates) / statistics.fmean(rates) if len(rates) > 1 else 0.0,
        "cpu_us_per_request": cpu_per_request(runs),
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "requests": sum(r["requests"] for r in runs),
        "errors": errors,
        "status_errors": sum(r["errors_status"] for r in runs),
    }


def cpu_per_request(runs: list[dict[str, Any]]) -> float | None:
    if any(r["turnout_cpu_seconds"] is None for r in runs):
        return None
    served = sum(r["requests"] for r in runs)
    return sum(r["turnout_cpu_seconds"] for r in runs) / served * 1e6 if served else None


def core_pins() -> dict[str, Any]:
    """taskset prefixes: Turnout on core 0, everything else on core 1 (if there are 2 cores)."""
    cores = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if len(cores) < 2 or taskset is None:
        return {"pinned": False, "turnout": [], "helpers": [], "helpers_prefix": []}
    turnout_pin = [taskset, "-c", str(cores[0])]
    helpers_pin = [taskset, "-c", str(cores[1])]
    return {"pinned": True, "turnout": turnout_pin, "helpers": helpers_pin,
            "helpers_prefix": helpers_pin}


def require_binary(name: str, package: str) -> str:
    """The path of `name`; installs the Debian package `package` when it is missing."""
    found = shutil.which(name)
    if found:
        return found
    print(f"bench: installing {package} from apt", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", package], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is still missing after installing {package}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `command` until the block ends, then stops it by its PID."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited early:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.005)
    raise RuntimeError(f"{url} was not ready within {timeout}s:\n{log.read_text()}")


@contextlib.contextmanager
def fake_upstream(pin: list[str], work: Path) -> Iterator[str]:
    port = free_port()
    log = work / "fake-upstream.log"
    command = [*pin, sys.executable, "-m", "bench.fake_upstream", "--port", str(port)]
    with process(command, log) as proc:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def redis_server(binary: str, pin: list[str], work: Path) -> Iterator[str]:
    port = free_port()
    log = work / "redis.log"
    command = [*pin, binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--appendonly", "no", "--dir", str(work), "--daemonize", "no"]
    with process(command, log) as proc:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{log.read_text()}")
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def turnout(name: str, config: str, pin: list[str], work: Path) -> Iterator[Turnout]:
    """`turnout serve` with one worker; ready = /health/readiness answers 200."""
    port = free_port()
    path = work / f"router-{name}.toml"
    path.write_text(config)
    log = work / f"turnout-{name}.log"
    command = [*pin, sys.executable, "-m", "router", "serve", "--config", str(path),
               "--port", str(port), "--workers", "1"]
    started = time.perf_counter()
    with process(command, log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/health/readiness", proc, log)
        yield Turnout(name, url, proc, time.perf_counter() - started)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    sys.exit(main())

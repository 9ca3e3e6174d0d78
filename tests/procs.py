"""Real `turnout serve` processes for the reliability tests: the Popen handle, the log, signals."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import ROOT, TURNOUT, free_port, stop, wait_until_up


@dataclass
class Turnout:
    process: subprocess.Popen[bytes]
    url: str
    config: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(
            f"{self.url}/health/liveness", timeout=5).status_code == 200


@contextlib.contextmanager
def turnout(config_text: str, tmp_path: Path, *, module: list[str] | None = None,
            env: dict[str, str] | None = None,
            extra_args: list[str] | None = None) -> Iterator[Turnout]:
    """`turnout serve` (or `module`, a drop-in) on a free port; stopped by its PID."""
    port = free_port()
    config = tmp_path / f"router-{port}.toml"
    config.write_text(config_text)
    log = tmp_path / f"turnout-{port}.log"
    args = [*(module or TURNOUT), "serve", "--config", str(config), "--port", str(port),
            *(extra_args or [])]
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                                   stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health/liveness", process)
            yield Turnout(process, url, config, log)
        finally:
            stop(process)

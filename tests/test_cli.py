"""`turnout check` and `turnout serve`: config lookup, output, exit codes, no secrets printed."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from router.cli import main
from tests.support import ROOT, free_port, running

SECRET_CONFIG = """
[server]
api_keys = ["client-secret-1"]
admin_key = "admin-secret-1"
[redis]
url = "redis://:redis-pass-1@127.0.0.1:6379/0"
[cache]
backend = "redis"
[[models]]
name = "smart"
  [[models.deployments]]
  id = "primary"
  provider = "openai"
  base_url = "https://api.example.test/v1"
  api_key = "${UPSTREAM_KEY}"
  model = "gpt-x"
  rpm = 100
[[models]]
name = "backup"
  [[models.deployments]]
  provider = "mock"
[fallbacks]
"smart" = ["backup"]
"""


def test_check_prints_routing_table_without_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret-1")
    path = tmp_path / "r.toml"
    path.write_text(SECRET_CONFIG)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "smart" in text and "primary: openai gpt-x at https://api.example.test/v1" in text
    assert "smart -> backup" in text
    assert "backend=redis" in text and "redis://:***@127.0.0.1:6379/0" in text
    for secret in ("client-secret-1", "admin-secret-1", "redis-pass-1", "sk-upstream-secret-1"):
        assert secret not in text


def test_check_reports_every_problem_and_exits_2(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text('[server]\nprot = 1\n[[models]]\nname = "g"\n[[models.deployments]]\n'
                    'provider = "openai"\napi_key = "sk-hidden-1"\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "server.prot: unknown key" in err
    assert "models[0].deployments[0].base_url: required for provider 'openai'" in err
    assert "models[0].deployments[0].model: required for provider 'openai'" in err
    assert "sk-hidden-1" not in err


def test_config_lookup_prefers_flag_then_environment_then_cwd(tmp_path, capsys, monkeypatch):
    for name in ("flag", "env", "cwd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "router.toml").write_text(
            f'[[models]]\nname = "{name}-group"\n[[models.deployments]]\nprovider = "mock"\n')
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["check"]) == 0
    assert "cwd-group" in capsys.readouterr().out
    monkeypatch.setenv("TURNOUT_CONFIG", str(tmp_path / "env" / "router.toml"))
    assert main(["check"]) == 0
    assert "env-group" in capsys.readouterr().out
    assert main(["check", "--config", str(tmp_path / "flag" / "router.toml")]) == 0
    assert "flag-group" in capsys.readouterr().out


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_serve_refuses_invalid_config_with_exit_2(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[server]\nport = 'x'\n")
    result = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(path)],
                            cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert b"server.port" in result.stderr


@pytest.mark.e2e
def test_serve_takes_host_and_port_flags_over_config(tmp_path):
    port = free_port()
    path = tmp_path / "r.toml"
    path.write_text('[server]\nport = 1\nhost = "0.0.0.0"\n'
                    '[[models]]\nname = "g"\n[[models.deployments]]\nprovider = "mock"\n')
    args = [sys.executable, "-m", "router", "serve", "--config", str(path),
            "--host", "127.0.0.1", "--port", str(port)]
    with running(args, f"http://127.0.0.1:{port}/health/liveness"):
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["g"]


@pytest.mark.e2e
def test_serve_with_two_workers_answers(tmp_path):
    port = free_port()
    path = tmp_path / "r.toml"
    path.write_text('[[models]]\nname = "g"\n[[models.deployments]]\nprovider = "mock"\n')
    args = [sys.executable, "-m", "router", "serve", "--config", str(path),
            "--port", str(port), "--workers", "2"]
    with running(args, f"http://127.0.0.1:{port}/health/liveness"):
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                            json={"model": "g", "messages": [{"role": "user", "content": "x"}]})
    assert answer.status_code == 200

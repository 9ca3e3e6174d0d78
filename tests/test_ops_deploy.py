"""The container image recipe and the Kubernetes sidecar example are consistent and usable."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from router.config import parse_config
from tests.support import ROOT, free_port, turnout_process

DOCKERFILE = (ROOT / "Dockerfile").read_text()
K8S = ROOT / "deploy" / "kubernetes"


def manifests() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def find(kind: str, name: str) -> dict:
    [found] = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def turnout_container() -> dict:
    spec = find("Deployment", "my-app")["spec"]["template"]["spec"]
    [container] = [c for c in spec.get("initContainers", []) + spec["containers"]
                   if c["name"] == "turnout"]
    return container


def healthcheck_command() -> list[str]:
    match = re.search(r"HEALTHCHECK .*?CMD (\[.*?\])\n", DOCKERFILE, re.S)
    assert match, "no exec-form HEALTHCHECK"
    command: list[str] = json.loads(match.group(1))
    return command


def test_image_runs_as_a_non_root_user_with_turnout_serve():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert DOCKERFILE.rstrip().endswith('CMD ["serve", "--host", "0.0.0.0", "--port", "4000"]')
    assert 'ENTRYPOINT ["turnout"]' in DOCKERFILE
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS build", DOCKERFILE, re.M)
    assert "-slim" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


@pytest.mark.e2e
def test_image_healthcheck_command_passes_on_a_live_turnout_and_fails_otherwise(tmp_path):
    command = healthcheck_command()
    assert "/health/liveness" in command[-1]
    config = '[[models]]\nname = "m"\n[[models.deployments]]\nprovider = "mock"\n'
    with turnout_process(config, tmp_path) as base:
        port = base.rsplit(":", 1)[1]
        live = [sys.executable, *command[1:-1], command[-1].replace("4000", port)]
        assert subprocess.run(live, timeout=20).returncode == 0
    dead = [sys.executable, *command[1:-1], command[-1].replace("4000", str(free_port()))]
    assert subprocess.run(dead, capture_output=True, timeout=20).returncode != 0


def test_sidecar_probes_and_security():
    container = turnout_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
    assert container["readinessProbe"]["httpGet"]["port"] == 4000
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["capabilities"]["drop"] == ["ALL"]
    app = find("Deployment", "my-app")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:4000/v1"} in app["env"]


def test_config_comes_from_the_configmap_and_keys_from_the_secret():
    container = turnout_container()
    pod = find("Deployment", "my-app")["spec"]["template"]["spec"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/turnout"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "turnout-config"
    assert container["args"][-1] == "/etc/turnout/router.toml"
    toml = find("ConfigMap", "turnout-config")["data"]["router.toml"]
    secret = find("Secret", "turnout-keys")["stringData"]

    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
                   if "valueFrom" in e and e["valueFrom"]["secretKeyRef"]["name"] == "turnout-keys"}
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", toml))  # those without a default
    assert needed <= set(from_secret), needed - set(from_secret)
    assert set(from_secret.values()) <= set(secret)

    env = {name: secret[key] for name, key in from_secret.items()}
    config = parse_config(toml, env)
    assert config.server.host == "0.0.0.0" and config.server.port == 4000
    assert config.cache.backend == "redis" and config.router.state == "redis"
    assert config.redis is not None
    assert "@turnout-redis:6379" in config.redis.url.get_secret_value()
    for secret_value in secret.values():
        assert secret_value not in toml


def test_redis_is_one_service_shared_by_every_pod():
    service = find("Service", "turnout-redis")
    redis = find("Deployment", "turnout-redis")
    assert service["spec"]["selector"] == redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["port"] == 6379
    assert find("Deployment", "my-app")["spec"]["replicas"] > 1
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")

"""docker-compose.yml: the wiring that `.ci/container-check` then runs for real.

Two gateway replicas on one PostgreSQL behind the load balancer, whose
configuration names each of them; only the load balancer (and the demo CRM)
publish ports, on loopback; the compose policy is the demo policy aimed at the
crm service. These are the static halves of what the container check proves
by bringing the stack up (it needs root and podman, so it runs in .ci/run).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
HAPROXY = ROOT / "deploy" / "compose" / "haproxy" / "haproxy.cfg"


def _services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _gateways() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if name.startswith("gateway-")}


def test_two_identical_gateway_replicas_on_one_postgresql() -> None:
    gateways = _gateways()
    assert sorted(gateways) == ["gateway-1", "gateway-2"]
    first, second = gateways.values()
    assert first == second
    url = first["environment"]["GATEWAY_DATABASE_URL"]
    assert re.fullmatch(r"postgresql\+asyncpg://gateway:\$\{POSTGRES_PASSWORD:-\w+\}@postgres/gateway", url)
    assert "postgres" in first["depends_on"]
    assert first["read_only"] is True and first["cap_drop"] == ["ALL"]


def _backends() -> dict[str, list[tuple[str, str]]]:
    backends: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in HAPROXY.read_text().splitlines():
        words = line.split("#")[0].split()
        if words[:1] == ["backend"]:
            current = backends.setdefault(words[1], [])
        elif words[:1] == ["server"] and current is not None:
            current.append((words[1], words[2]))
    return backends


def test_the_load_balancer_sends_agents_and_operators_to_every_replica() -> None:
    backends = _backends()
    replicas = sorted(_gateways())
    assert backends == {"proxy": [(r, f"{r}:8080") for r in replicas],
                        "admin": [(r, f"{r}:8081") for r in replicas]}
    lb = _services()["lb"]
    assert sorted(lb["depends_on"]) == replicas
    text = HAPROXY.read_text()
    # in rotation only while the admin health (which needs the store) is 200
    assert "option httpchk GET /v1/health" in text and "check port 8081" in text
    assert text.count("http-response set-header X-Served-By %[srv_name]") == 2


def test_only_loopback_ports_are_published_and_no_replica_publishes_any() -> None:
    published = {name: s.get("ports", []) for name, s in _services().items()}
    for name in _gateways():
        assert published[name] == []
    assert [p.rsplit(":", 1)[1] for p in published["lb"]] == ["8080", "8081"]
    for ports in published.values():
        assert all(p.startswith("127.0.0.1:") for p in ports)


def test_build_contexts_and_mounted_files_exist() -> None:
    for name, service in _services().items():
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            default = re.fullmatch(r"\$\{\w+:-(.+)\}", source)
            source = default.group(1) if default else source
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_the_compose_policy_is_the_demo_policy_aimed_at_the_crm_service() -> None:
    demo = (ROOT / "policies" / "crm.yaml").read_text().splitlines()
    compose = (ROOT / "deploy" / "compose" / "policies" / "crm.yaml").read_text().splitlines()
    differ = [(a, b) for a, b in zip(demo, compose, strict=True) if a != b]
    assert len(differ) == 1
    assert differ[0][0].startswith("base_url: http://127.0.0.1:3000")
    assert differ[0][1].split("#")[0].split() == ["base_url:", "http://crm:3000"]
    crm = _services()["crm"]
    assert crm["command"][-2:] == ["--port", "3000"]

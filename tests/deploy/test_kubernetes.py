"""deploy/kubernetes: valid against the Kubernetes schemas, and wired as documented.

kubernetes-validate carries the API schemas of every release it knows, so this
runs offline. Beyond the schema, the tests check what a schema cannot: two
replicas with probes on the right listeners, a PodDisruptionBudget that selects
them, every ConfigMap and Secret that is referenced exists, and the settings
and policies they carry load in the gateway itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.errors import SettingsError
from gateway.policies import load_policies
from gateway.settings import load_settings, sha256_hex
from tests.deploy.conftest import KUBERNETES, ROOT, manifests, resources

# The oldest release still common in managed clusters, and the newest the
# installed schemas know: an API removed in between would fail one of them.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]

DOCS = [(name, i, doc) for name, docs in manifests().items() for i, doc in enumerate(docs)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "index", "doc"), DOCS,
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, _, d in DOCS])
def test_every_manifest_is_valid_against_the_kubernetes_schema(name: str, index: int,
                                                               doc: dict[str, Any],
                                                               version: str) -> None:
    # strict: a misspelt or misplaced field is an error, not silently dropped
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_schema_violation_is_caught() -> None:
    deployment = json.loads(json.dumps(resources()[("Deployment", "agent-gateway")]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())


def _deployment() -> dict[str, Any]:
    return resources()[("Deployment", "agent-gateway")]


def _container() -> dict[str, Any]:
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _port(name: str) -> int:
    return next(p["containerPort"] for p in _container()["ports"] if p["name"] == name)


def test_two_replicas_roll_without_losing_capacity() -> None:
    spec = _deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_readiness_needs_the_store_and_liveness_does_not() -> None:
    container = _container()
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    # ready: the admin health, 503 when the store cannot take a write
    assert readiness["httpGet"] == {"path": "/v1/health", "port": "admin"}
    # alive: the agent listener answers; a PostgreSQL outage must not restart every pod
    assert liveness["httpGet"] == {"path": "/_gateway/health", "port": "proxy"}
    assert container["startupProbe"]["httpGet"]["port"] == "proxy"
    names = {p["name"] for p in container["ports"]}
    assert {"admin", "proxy"} <= names


def test_resources_and_security_context() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    container = _container()
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # the uid is the image's own user (the Dockerfile's USER), numeric so that
    # runAsNonRoot can be checked by the kubelet
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user and pod["securityContext"]["runAsUser"] == int(user.group(1)) != 0
    # the only writable place is an emptyDir at /tmp
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    writable = [path for path, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"]


def test_the_disruption_budget_selects_the_deployments_pods() -> None:
    pdb = resources()[("PodDisruptionBudget", "agent-gateway")]
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # a drain can proceed (one pod at a time) and never takes the last one
    assert 1 <= pdb["spec"]["minAvailable"] < _deployment()["spec"]["replicas"]


def test_services_reach_the_proxy_and_admin_ports_of_the_pods() -> None:
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    targets = {}
    for (kind, name), doc in resources().items():
        if kind == "Service":
            assert doc["spec"]["selector"].items() <= labels.items(), name
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name} is exposed"
            targets[name] = [p["targetPort"] for p in doc["spec"]["ports"]]
    assert targets == {"agent-gateway": ["proxy"], "agent-gateway-admin": ["admin"]}
    policy = resources()[("NetworkPolicy", "agent-gateway")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    open_rule, admin_rule = policy["spec"]["ingress"]
    assert "from" not in open_rule and open_rule["ports"] == [{"port": "proxy"}]
    assert admin_rule["from"] and admin_rule["ports"] == [{"port": "admin"}]


def _references(pod: dict[str, Any]) -> set[tuple[str, str]]:
    refs = set()
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    refs.add((kind, source[key]["name"]))
        for env in container.get("env", []):
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in env.get("valueFrom", {}):
                    refs.add((kind, env["valueFrom"][key]["name"]))
    refs.add(("ServiceAccount", pod["serviceAccountName"]))
    return refs


def test_every_referenced_configmap_secret_and_account_exists() -> None:
    refs = _references(_deployment()["spec"]["template"]["spec"])
    assert ("ConfigMap", "agent-gateway-policies") in refs
    assert ("Secret", "agent-gateway-credentials") in refs
    assert refs <= resources().keys()


def _secret_env(replace_placeholders: bool) -> dict[str, str]:
    env = dict(resources()[("Secret", "agent-gateway-credentials")]["stringData"])
    if replace_placeholders:
        for name in ("GATEWAY_AGENTS", "GATEWAY_OPERATORS"):
            env[name] = re.sub(r"REPLACE_\w+", lambda m: sha256_hex(m.group(0)), env[name])
    return env


def _write_configmap(name: str, directory: Path) -> Path:
    directory.mkdir()
    for key, text in resources()[("ConfigMap", name)]["data"].items():
        (directory / key).write_text(text)
    return directory


def _mount_path(volume: str) -> str:
    return next(m["mountPath"] for m in _container()["volumeMounts"] if m["name"] == volume)


def test_the_settings_and_secret_give_the_gateway_valid_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _secret_env(replace_placeholders=True).items():
        monkeypatch.setenv(name, value)
    settings_dir = _write_configmap("agent-gateway-settings", tmp_path / "settings")
    args = _container()["args"]
    config = Path(args[args.index("--config") + 1])
    assert config.parent == Path(_mount_path("settings"))
    settings = load_settings(settings_dir / config.name)
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert [a.name for a in settings.agents] == ["support-bot"]
    assert {o.role for o in settings.operators} == {"admin", "approver"}
    assert str(settings.policies_dir) == _mount_path("policies")
    # the probes and Services name the ports the gateway listens on
    assert (settings.proxy.port, settings.admin.port) == (_port("proxy"), _port("admin"))


def test_the_gateway_refuses_the_secret_until_its_placeholders_are_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _secret_env(replace_placeholders=False).items():
        monkeypatch.setenv(name, value)
    settings_dir = _write_configmap("agent-gateway-settings", tmp_path / "settings")
    with pytest.raises(SettingsError, match="64 hex digits"):
        load_settings(settings_dir / "gateway.yaml")


def test_the_policies_configmap_is_a_valid_policy_set_with_the_secrets_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policies = _write_configmap("agent-gateway-policies", tmp_path / "policies")
    for name, value in _secret_env(replace_placeholders=True).items():
        monkeypatch.setenv(name, value)
    policy_set = load_policies(policies)
    assert sorted(policy_set.upstreams) == ["crm"]
    # every ${VAR} a policy names is a key of the Secret (the pods' environment)
    named = {m for text in resources()[("ConfigMap", "agent-gateway-policies")]["data"].values()
             for m in re.findall(r"\$\{(\w+)\}", text)}
    assert named == {"CRM_TOKEN"}
    assert named <= _secret_env(replace_placeholders=False).keys()

"""deploy/kubernetes-ha: the gateway on a CloudNativePG cluster with a synchronous
standby, and agents whose only way out is the gateway.

The overlay is rendered as ``kubectl apply -k`` would (``kubectl kustomize``,
offline); every resource of a built-in kind is validated against the
Kubernetes schemas. The CNPG ``Cluster`` is a custom resource those schemas
do not know, so its shape is checked here: the fields the failover story
rests on.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.store.engine import asyncpg_dsn, parse_url
from tests.deploy.conftest import ROOT, resources
from tests.external import missing

VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
OVERLAY = ROOT / "deploy" / "kubernetes-ha"


def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl not found: it renders the kustomize overlay")
    done = subprocess.run([str(kubectl), "kustomize", str(OVERLAY)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def overlay() -> dict[tuple[str, str], dict[str, Any]]:
    return rendered()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_builtin_resource_is_valid(overlay: dict[tuple[str, str], dict[str, Any]],
                                         version: str) -> None:
    builtin = {key: doc for key, doc in overlay.items() if "cnpg.io" not in doc["apiVersion"]}
    assert builtin.keys() >= set(resources())  # the base, all of it
    for doc in builtin.values():
        kubernetes_validate.validate(doc, version, strict=True)


def _cluster(overlay: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    [cluster] = [d for (kind, _), d in overlay.items() if kind == "Cluster"]
    return cluster


def test_the_cluster_has_a_synchronous_standby(
        overlay: dict[tuple[str, str], dict[str, Any]]) -> None:
    cluster = _cluster(overlay)
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 3  # a primary, a synchronous standby, one to spare
    synchronous = spec["postgresql"]["synchronous"]
    assert synchronous["method"] in ("any", "first") and synchronous["number"] >= 1
    assert synchronous["number"] < spec["instances"]
    assert synchronous["dataDurability"] == "required"  # no commit on the primary alone
    assert spec["enablePDB"] is True
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["bootstrap"]["initdb"]["database"] == "gateway"
    assert set(spec) <= {"instances", "imageName", "primaryUpdateStrategy", "enablePDB",
                         "postgresql", "bootstrap", "storage", "affinity"}


def test_the_gateway_reads_the_primary_through_the_operators_secret(
        overlay: dict[tuple[str, str], dict[str, Any]]) -> None:
    cluster = _cluster(overlay)["metadata"]["name"]
    deployment = overlay[("Deployment", "agent-gateway")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [env] = [e for e in container["env"] if e["name"] == "GATEWAY_DATABASE_URL"]
    # CloudNativePG writes <cluster>-app with the URI of the <cluster>-rw service
    assert env["valueFrom"]["secretKeyRef"] == {"name": f"{cluster}-app", "key": "uri"}
    assert container["envFrom"]  # the base's credentials still come in
    uri = f"postgresql://gateway:pw@{cluster}-rw.agents:5432/gateway"
    assert asyncpg_dsn(parse_url(uri)) == uri  # one host, the service that follows the primary
    # the PodDisruptionBudget of the gateway's own pods is still there
    assert ("PodDisruptionBudget", "agent-gateway") in overlay


def test_agents_reach_nothing_but_the_gateway_and_dns(
        overlay: dict[tuple[str, str], dict[str, Any]]) -> None:
    policy = overlay[("NetworkPolicy", "agents-egress-only-through-the-gateway")]["spec"]
    assert policy["policyTypes"] == ["Egress"] and "ingress" not in policy
    assert policy["podSelector"]["matchLabels"] == {"agent-gateway/agent": "true"}
    to_gateway, to_dns = policy["egress"]
    labels = overlay[("Deployment", "agent-gateway")]["spec"]["template"]["metadata"]["labels"]
    [peer] = to_gateway["to"]
    assert peer.keys() == {"podSelector"}  # gateway pods of this namespace, no ipBlock
    assert peer["podSelector"]["matchLabels"].items() <= labels.items()
    assert to_gateway["ports"] == [{"port": "proxy", "protocol": "TCP"}]
    [container] = overlay[("Deployment", "agent-gateway")]["spec"]["template"]["spec"][
        "containers"]
    assert "proxy" in {p["name"] for p in container["ports"]}
    [dns] = to_dns["to"]
    assert dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert {p["port"] for p in to_dns["ports"]} == {53}
    for rule in policy["egress"]:  # no rule opens an address range (the internet)
        assert all("ipBlock" not in peer for peer in rule["to"])

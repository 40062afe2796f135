"""What the deploy tests read: the repository's deploy files, parsed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes manifest under deploy/kubernetes, by file name."""
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(KUBERNETES.glob("*.yaml")) if path.name != "kustomization.yaml"}


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource, by (kind, name); a duplicate is an error."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for docs in manifests().values():
        for doc in docs:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out

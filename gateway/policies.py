"""Reading a policy directory from disk (the adapter around the pure loader)."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.core.policy.decide import PolicySet
from gateway.core.policy.loader import load_policy_set
from gateway.errors import PolicyError


def read_policy_dir(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory"])
    texts = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            try:
                texts[str(path)] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError([f"{path}:1: cannot read: {exc}"]) from None
    return texts


def load_policies(directory: Path) -> PolicySet:
    """The policy set of ``directory``; raises PolicyError with file:line problems."""
    policy_set, problems = load_policy_set(read_policy_dir(directory), os.environ)
    if policy_set is None:
        raise PolicyError(problems)
    return policy_set


def credential_warnings(policy_set: PolicySet) -> list[str]:
    """``FILE: warning: ...`` for each upstream whose credential's echoes are not hidden
    (a value too short to replace): ``policy check`` prints them, ``serve`` logs them."""
    return [f"{upstream.source}: warning: {upstream.credential.unhidden}"
            for _, upstream in sorted(policy_set.upstreams.items())
            if upstream.credential is not None and upstream.credential.unhidden]

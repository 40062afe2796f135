"""What the admin API drives: the running gateway, seen from the operators' side.

``gateway.app.Gateway`` is the implementation; the admin API depends on this
Protocol only, so that it never imports the wiring that imports it.
"""

from __future__ import annotations

from typing import Protocol

from gateway.core.policy.decide import PolicySet
from gateway.metrics import Metrics
from gateway.ports import Store
from gateway.services.approvals import ApprovalQueue
from gateway.services.audit_trail import AuditTrail
from gateway.services.checkpoints import Checkpoints
from gateway.services.journal import Journal
from gateway.services.killswitch import FreezeState
from gateway.services.rollbacks import Rollbacks
from gateway.services.shadows import ShadowWrites
from gateway.settings import Settings


class ReloadOutcome(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def revision(self) -> str: ...

    @property
    def problems(self) -> list[str]: ...


class Controls(Protocol):
    settings: Settings
    metrics: Metrics
    approvals: ApprovalQueue
    rollbacks: Rollbacks
    audit: AuditTrail
    checkpoints: Checkpoints
    shadows: ShadowWrites
    journal: Journal

    @property
    def store(self) -> Store: ...

    @property
    def policies(self) -> PolicySet: ...

    @property
    def freezes(self) -> FreezeState: ...

    async def reload_policies(self, actor: str) -> ReloadOutcome:
        """Load the policy directory again; an invalid set keeps the last good one."""

"""Wiring: one ``Gateway`` holds the adapters; the two ASGI apps are views of it.

``Gateway(settings)`` does nothing until ``start()``: it opens the store
(creating or migrating the schema), loads the freezes and the policy set,
and builds the pipeline. ``proxy_app()`` is the agent listener, and
``admin_app()`` the operators' FastAPI app; both share this one state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.core.model import utcnow
from gateway.core.policy import PolicySet
from gateway.errors import PolicyError
from gateway.metrics import Metrics
from gateway.policies import load_policies
from gateway.ports import Store
from gateway.ports import Upstream as UpstreamClient
from gateway.proxy.listener import AgentDirectory, ProxyApp
from gateway.services.approvals import ApprovalQueue
from gateway.services.audit_trail import AuditTrail
from gateway.services.freezes import FreezeState
from gateway.services.notify import Notifier
from gateway.services.pipeline import Pipeline
from gateway.services.rollbacks import Rollbacks
from gateway.services.tripwires import Tripwires
from gateway.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    revision: str
    problems: list[str]


class Gateway:
    def __init__(self, settings: Settings, store: Store | None = None,
                 client: UpstreamClient | None = None) -> None:
        self.settings = settings
        self._store = store
        self._client = client
        self.metrics = Metrics()
        self._pipeline: Pipeline | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "Gateway.start() first"
        return self._store

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "Gateway.start() first"
        return self._pipeline

    @property
    def policies(self) -> PolicySet:
        return self.pipeline.policies

    @property
    def freezes(self) -> FreezeState:
        return self.pipeline.freezes

    async def start(self) -> None:
        policies = load_policies(self.settings.policies_dir)  # PolicyError before any I/O
        if self._store is None:
            from gateway.store import open_store
            self._store = open_store(self.settings.database_url)
        await self._store.start()
        if self._client is None:
            from gateway.proxy.upstream import UpstreamClient
            self._client = UpstreamClient(timeout=self.settings.upstream_timeout)
        freezes = FreezeState(self._store, self._store.bus(), self.settings.engage_wait,
                              horizon=self._longest_write)
        await freezes.start()
        self._pipeline = Pipeline(self.settings, self._store, self._client, freezes, policies)
        self._pipeline.tripwires = Tripwires(freezes, self._store, self.metrics)
        self._pipeline.tripwires.configure(self.settings.tripwires, policies)
        self.notifier = Notifier(self.settings.approval_webhook)
        self.notifier.start()
        lease_seconds = self.settings.capture_timeout + self.settings.upstream_timeout + 30
        self.approvals = ApprovalQueue(self._pipeline, self._store, self.notifier,
                                       self.settings.approval_max_wait, lease_seconds)
        self._pipeline.holds = self.approvals
        await self.approvals.sweep()  # claims left by a process that died are marked unknown
        self.approvals.start()
        self.rollbacks = Rollbacks(self._pipeline, self._store)
        self.audit = AuditTrail(self._store)
        self.audit.start()
        self.resuming = asyncio.create_task(self.rollbacks.resume_unfinished())
        log.info("policy set %s loaded: %s", policies.revision, ", ".join(policies.upstreams))

    def _longest_write(self) -> float:
        """Seconds a write may still be on its way after its intent: its upstream timeout."""
        timeouts = [u.spec.timeout or 0 for u in self.policies.upstreams.values()]
        return max([self.settings.upstream_timeout, *timeouts]) + 1

    async def stop(self) -> None:
        if self._pipeline is not None:
            self.resuming.cancel()
            await asyncio.gather(self.resuming, return_exceptions=True)
            await self.approvals.stop()
            await self._pipeline.settled()
            await self.audit.stop()
            await self.notifier.stop()
            await self._pipeline.freezes.stop()
        if self._client is not None:
            await self._client.close()
        if self._store is not None:
            await self._store.close()

    async def reload_policies(self, actor: str) -> ReloadResult:
        """Load the directory again; an invalid set leaves the last good one in force."""
        previous = self.policies.revision
        try:
            policies = load_policies(self.settings.policies_dir)
        except PolicyError as exc:
            self.metrics.policy_reloads["failed"] += 1
            log.error("policy reload failed, keeping %s:\n%s", previous, "\n".join(exc.problems))
            await self._audit(actor, "policy.reload_failed",
                              {"kept": previous, "problems": exc.problems})
            return ReloadResult(False, previous, exc.problems)
        self.pipeline.policies = policies
        self.pipeline.tripwires.configure(self.settings.tripwires, policies)
        self.metrics.policy_reloads["ok"] += 1
        log.info("policy set %s loaded (was %s)", policies.revision, previous)
        await self._audit(actor, "policy.reload", {"revision": policies.revision,
                                                   "previous": previous})
        return ReloadResult(True, policies.revision, [])

    async def _audit(self, actor: str, action: str, detail: dict[str, object]) -> None:
        try:
            await self.store.append_audit(actor, action, dict(detail), utcnow())
        except Exception:
            log.exception("could not append %s to the audit log", action)

    def proxy_app(self) -> ProxyApp:
        agents = AgentDirectory([(a.name, a.key_sha256) for a in self.settings.agents],
                                self.settings.allow_anonymous_agents)
        return ProxyApp(self.pipeline, agents, own_routes=self.approvals.agent_view,
                        metrics=self.metrics, audit=self.audit)

    def admin_app(self) -> FastAPI:
        from gateway.admin.api import create_admin_app
        return create_admin_app(self)

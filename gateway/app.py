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
from typing import TYPE_CHECKING, Any

from gateway.core.model import utcnow
from gateway.core.policy.decide import PolicySet
from gateway.deadline import within
from gateway.errors import PolicyError, SettingsError, StartupError
from gateway.metrics import Metrics
from gateway.observe import NO_OBSERVER, Observer
from gateway.observe.observer import observer_for
from gateway.policies import credential_warnings, load_policies
from gateway.ports import Store
from gateway.ports import Upstream as UpstreamClient
from gateway.proxy.listener import AgentDirectory, ProxyApp
from gateway.proxy.mcp import McpReader
from gateway.services.anchors import anchor_for
from gateway.services.approvals import ApprovalQueue, Execution
from gateway.services.audit_trail import AuditTrail
from gateway.services.call import Policies, Senders
from gateway.services.checkpoints import Checkpoints
from gateway.services.inflight import InFlightLimits
from gateway.services.inflight_shared import SharedCounts
from gateway.services.journal import Journal
from gateway.services.killswitch import FreezeState
from gateway.services.notify import Notifier
from gateway.services.pipeline import Pipeline
from gateway.services.recovery import Recovery
from gateway.services.resends import LEFT, WriteResends
from gateway.services.rollbacks import Rollbacks
from gateway.services.shadows import ShadowWrites
from gateway.services.siblings import Siblings
from gateway.services.tripwires import Tripwires
from gateway.settings import Settings
from gateway.upstreams.mcp import McpSender
from gateway.upstreams.rest import RestSender

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.core.note import NoteSigner
    from gateway.core.seal import Sealer

log = logging.getLogger("gateway")
SAVES_AT_STOP = 10.0  # seconds a stop waits for the saves the store refused while it was down


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    revision: str
    problems: list[str]


class Gateway:
    def __init__(self, settings: Settings, store: Store | None = None,
                 client: UpstreamClient | None = None,
                 in_flight: SharedCounts | None = None, siblings: Siblings | None = None
                 ) -> None:
        self.settings = settings
        self._store = store
        self._client = client
        self._in_flight = in_flight  # max_in_flight's counts, shared with sibling workers
        self._siblings = siblings  # the sibling workers, and which of them died
        self.metrics = Metrics()
        self.observer: Observer = NO_OBSERVER
        self._pipeline: Pipeline | None = None
        self._policies: Policies | None = None

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
        """The policy set in force (swapped whole by ``reload_policies``)."""
        assert self._policies is not None, "Gateway.start() first"
        return self._policies.current

    async def start(self) -> None:
        policies = load_policies(self.settings.policies_dir)  # PolicyError before any I/O
        for warning in credential_warnings(policies):
            log.warning("%s", warning)
        try:
            self.observer = observer_for(self.settings, self.metrics)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        created = None
        if self._store is None:
            from gateway.store.diagnose import sqlite_location
            from gateway.store.sql import open_store
            try:
                location = sqlite_location(self.settings.database_url)
                self._store = open_store(self.settings.database_url,
                                         fsync=self.settings.journal_fsync)
            except ValueError as exc:
                raise StartupError(str(exc)) from None
            if location is not None and not location[1]:
                created = location[0]
        sealer = self._sealer()
        signer = self._audit_signer()  # a bad key stops the start before any I/O
        await self._start_store()
        if not sealer.enabled:  # once the store answered: a start that fails says only why
            log.warning("no journal_key (GATEWAY_JOURNAL_KEY): secret-named values are not "
                        "kept: prior values (rolling them back is refused), held calls that "
                        "carry them (approving one is refused: sealed_unavailable) and "
                        "executed calls' exact answers (agents see them redacted); set one")
        if created is not None:  # loud: a mistyped path would otherwise go unnoticed
            log.warning("created a new, empty store at %s", created.resolve())
        if self._client is None:
            from gateway.upstreams.client import UpstreamClient
            self._client = UpstreamClient(timeout=self.settings.upstream_timeout)
        bus = self._store.bus()
        process = getattr(self._store, "process", None) or "gateway"
        if self._siblings is not None:  # for the master to name when this worker dies
            self._siblings.named(process)
        self.resends = resends = WriteResends(self._store, bus, horizon=self._longest_write,
                                              siblings=self._siblings)
        await resends.start()
        freezes = FreezeState(self._store, bus, self.settings.engage_wait,
                              horizon=self._longest_write, routes={LEFT: resends.heard})
        await freezes.start()
        self.freezes = freezes
        self._policies = Policies(policies)
        self.senders = Senders({"http": RestSender(self.settings, self._client),
                                "mcp": McpSender(self.settings, self._client)})
        self.journal = Journal(self.settings, self._store, freezes,
                               getattr(self._store, "sealer", None) or sealer)
        self.tripwires = Tripwires(freezes, self._store, self.metrics)
        self.tripwires.configure(self.settings.tripwires, policies)
        self.audit = AuditTrail(self._store)  # started below; records queue until then
        self.notifier = Notifier(self.settings.approval_webhook)
        self.notifier.start()
        lease_seconds = (self.settings.capture_timeout + self.settings.upstream_timeout
                         + 2 * self.settings.executor_lease)
        execution = Execution()  # the pipeline's, which holds calls in this queue
        self.approvals = ApprovalQueue(self.settings, self._policies, self.senders, freezes,
                                       self._store, self.notifier, execution,
                                       self.settings.approval_max_wait, lease_seconds)
        self.shadows = ShadowWrites(self._store, self.approvals, self.notifier)
        self._pipeline = Pipeline(self.settings, self._policies, self.senders, freezes,
                                  self.journal, self.tripwires, self.observer,
                                  holds=self.approvals, proposals=self.shadows,
                                  inflight=InFlightLimits(self._in_flight), resends=resends)
        execution.bind(self._pipeline.execute_held)
        await self.approvals.sweep()  # claims left by a process that died are marked unknown
        self.approvals.start()
        self.rollbacks = Rollbacks(self._policies, self.senders, self._store, self.journal,
                                   self.audit, owner=process,
                                   lease_seconds=self.settings.executor_lease)
        self.audit.start()
        self.checkpoints = Checkpoints(
            self._store, signer,
            [anchor_for(a) for a in self.settings.audit_anchors],
            self.settings.audit_checkpoint_interval, self.settings.audit_origin)
        await self.checkpoints.start()
        # a heartbeat, then what dead processes left: their intents, audit records, plans
        self.recovery = Recovery(self._store, self.rollbacks, self.journal, process,
                                 self.settings.executor_lease, self._longest_write(),
                                 resends=resends)
        await self.recovery.start()
        self.resuming = asyncio.create_task(self.rollbacks.resumed())
        log.info("policy set %s loaded: %s", policies.revision, ", ".join(policies.upstreams))

    def _sealer(self) -> Sealer:
        """The store's sealer from ``journal_key`` (else its SQLite key file); a bad key
        stops the start (a missing one on PostgreSQL is warned about: README "Secrets")."""
        from gateway.errors import SealError
        from gateway.store.engine import parse_url
        from gateway.store.sql import default_sealer
        try:
            sealer = default_sealer(parse_url(self.settings.database_url),
                                    self.settings.journal_key)
        except SealError as exc:
            raise SettingsError(f"journal_key: {exc}") from None
        except OSError as exc:
            raise StartupError(f"the journal key file beside the database: {exc}") from None
        store: Any = self._store
        if hasattr(store, "sealer") and (self.settings.journal_key or store.sealer is None):
            store.sealer = sealer
        return sealer

    def _audit_signer(self) -> NoteSigner | None:
        """The audit checkpoints' key from ``audit_signing_key``, else the SQLite key file
        beside the database, else none (README "Audit you can prove to someone else")."""
        from gateway.core.note import NoteSigner
        from gateway.errors import AuditKeyError, NoteError
        from gateway.store.audit_key import signing_seed
        from gateway.store.engine import parse_url
        try:
            seed, source = signing_seed(parse_url(self.settings.database_url),
                                        self.settings.audit_signing_key)
            signer = None if seed is None else NoteSigner(self.settings.audit_origin, seed)
        except (AuditKeyError, NoteError) as exc:
            raise SettingsError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"the audit key file beside the database: {exc}") from None
        log.debug("audit checkpoints signed with the key from %s", source)
        return signer

    async def _start_store(self) -> None:
        from gateway.store.diagnose import explain
        try:
            await self.store.start()
        except Exception as exc:
            reason = explain(exc, self.settings.database_url)
            if reason is None:
                raise
            raise StartupError(reason) from None

    def _longest_write(self) -> float:
        """Seconds a write may still be on its way after its intent: its upstream timeout."""
        timeouts = [u.spec.timeout or 0 for u in self.policies.upstreams.values()]
        return max([self.settings.upstream_timeout, *timeouts]) + 1

    async def stop(self) -> None:
        if self._pipeline is not None:
            self.resuming.cancel()
            await asyncio.gather(self.resuming, return_exceptions=True)
            await self.recovery.stop()
            # saves the store refused, retried while it is down: held calls' answers and
            # journal outcomes, side by side under one deadline, not one after the other
            await asyncio.gather(self.approvals.stop(SAVES_AT_STOP),
                                 self._outcomes_journaled(SAVES_AT_STOP))
            await self.audit.stop()
            await self.checkpoints.stop()
            await self.notifier.stop()
            await self.resends.stop()  # its look for dead processes uses the bus
            await self.freezes.stop()
            await self.senders.close()  # the MCP sender's kept connections
        await self.observer.close()
        if self._client is not None:
            await self._client.close()
        if self._store is not None:
            await self._store.close()

    async def _outcomes_journaled(self, timeout: float) -> None:
        try:
            await within(self.journal.settled(), timeout)
        except TimeoutError:
            log.error("outcomes not journaled at shutdown; recovery journals them unknown")

    async def reload_policies(self, actor: str) -> ReloadResult:
        """Load the directory again; an invalid set leaves the last good one in force."""
        previous = self.policies.revision
        try:
            policies = load_policies(self.settings.policies_dir)
        except PolicyError as exc:
            self.metrics.policy_reloaded(ok=False)
            log.error("policy reload failed, keeping %s:\n%s", previous, "\n".join(exc.problems))
            await self._audit(actor, "policy.reload_failed",
                              {"kept": previous, "problems": exc.problems})
            return ReloadResult(False, previous, exc.problems)
        for warning in credential_warnings(policies):
            log.warning("%s", warning)
        assert self._policies is not None
        self._policies.swap(policies)
        self.tripwires.configure(self.settings.tripwires, policies)
        self.metrics.policy_reloaded(ok=True)
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
        assert self._policies is not None, "Gateway.start() first"
        mcp = McpReader(self.pipeline, self._policies, self.settings.max_write_body)
        return ProxyApp(self.pipeline, self._policies, agents,
                        own_routes=self.approvals.agent_view, observer=self.observer,
                        audit=self.audit, mcp=mcp)

    def admin_app(self) -> FastAPI:
        from gateway.admin.api import create_admin_app
        return create_admin_app(self)

"""Shadowed writes kept as proposals, and their promotion to held calls.

In ``mode: shadow`` the pipeline journals a write and answers a projection
without sending it (``Pipeline._shadow``). The write is also kept here, exactly
as the agent sent it (minus secret headers, bound to its digest), in the
approval queue's table with status ``shadow`` and its journal entry's id: not
in the queue, invisible to the agent, until an operator promotes it. Promotion
is a compare-and-set (once, in any number of processes); the promoted call is
then an ordinary held call: approved as the rule's ``approval`` says (one
approver by default), executed once, journaled as a hold.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gateway.core.approvals import ApprovalStatus, HeldCall, audit_item, public_view
from gateway.core.model import Decision, JournalEntry, Verdict, iso, utcnow
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.schema import Approval
from gateway.errors import AdminError
from gateway.ports import HeldCallStore
from gateway.services.approvals import ApprovalQueue
from gateway.services.call import Call
from gateway.services.held_calls import held_call
from gateway.services.notify import Notifier


class ShadowWrites:
    """Kept in ``store``; a promoted write joins ``queue`` (audited and announced as a
    held call is)."""

    def __init__(self, store: HeldCallStore, queue: ApprovalQueue, notifier: Notifier) -> None:
        self.store = store
        self.queue = queue
        self.notifier = notifier

    async def keep(self, upstream: Upstream, call: Call, entry: JournalEntry) -> None:
        """Keep a shadowed write under its journal entry's id; JournalUnavailable when the
        store cannot take it."""
        rule = upstream.rule(entry.rule)
        spec = rule.approval if rule is not None and rule.approval is not None else Approval()
        decision = Decision(Verdict.HOLD, entry.rule, "shadowed", entry.policy_revision,
                            upstream.name)
        held = held_call(
            upstream, call, decision, spec, id=entry.id, at=entry.at,
            status=ApprovalStatus.SHADOW, expires_at=None,
            extra={"shadow": {"journal_id": entry.id, "at": iso(entry.at),
                              "would_decide": entry.would_decide, "expires": spec.expires}})
        await self.queue.create(held)

    async def promote(self, entry_ids: list[str], operator: str) -> list[dict[str, Any]]:
        """Turn shadowed writes (by journal entry id) into held calls, each once: the
        request kept when it was shadowed, bound to its digest, pending for approvers
        as the rule's ``approval`` says (one approver by default)."""
        kept = []
        for entry_id in dict.fromkeys(entry_ids):  # all checked before any is changed
            held = await self.store.get_held(entry_id)
            if held is None or held.kind != "shadow":
                raise AdminError(404, "not_found", f"no shadowed write {entry_id} (only "
                                 "journal entries in state shadow can be promoted)")
            if held.status is not ApprovalStatus.SHADOW:
                raise AdminError(409, "already_promoted", f"shadowed write {entry_id} was "
                                 f"promoted already: approval {held.id} is "
                                 f"{held.status.value}")
            kept.append(held)
        promoted = []
        for held in kept:
            now = utcnow()
            proposal = held.extra["shadow"]
            expires = proposal.get("expires")
            extra = {**held.extra, "shadow": {**proposal, "promoted_by": operator,
                                              "promoted_at": iso(now)}}
            if await self.store.promote_shadow(
                    held.id, now, now + timedelta(seconds=expires) if expires else None, extra,
                    audit_item(operator, "shadow.promote", held, {
                        "journal_id": held.id, "would_decide": proposal.get("would_decide")})):
                final = await self.store.get_held(held.id) or held
                self.notifier.publish("approval.held", public_view(final))
            else:  # promoted by someone else meanwhile
                final = await self.store.get_held(held.id) or held
            promoted.append(public_view(final))
        return promoted

    async def proposals(self, entry_ids: list[str]) -> dict[str, HeldCall]:
        """The kept requests of shadowed writes, by journal entry id."""
        found = {}
        for entry_id in entry_ids:
            held = await self.store.get_held(entry_id)
            if held is not None and held.kind == "shadow":
                found[entry_id] = held
        return found

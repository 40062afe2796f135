"""How a claimed held call's end is saved: ``executed`` with the upstream's answer,
``failed`` or ``unknown``, with its audit record, then announced and the waiting
agent woken.

The save is a store write (``finish_held``), and the store may be down when the
upstream answers: a primary that died while the call was in flight, none promoted
yet. The gateway has the answer in hand and the claim is still its own, so it
keeps the answer and retries the save until it lands or the claim's lease ends
(then the sweeper calls the call ``unknown``, as for a process that died; never
later, so no answer overwrites what another process decided). The journal entry
keeps the answer all the same (its outcome is retried apart), and the sweeper's
``approval.unknown`` is the one record of the call's end: recovery appends no
other for the entry (``Store.unaudited``). The operator's
request waits for the save up to ``wait`` seconds; past that it is told the
store is unavailable while the save goes on here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.core.approvals import (
    ApprovalStatus,
    HeldCall,
    audit_item,
    public_view,
    sent_secrets,
)
from gateway.core.model import iso, utcnow
from gateway.deadline import cancelled
from gateway.ports import HeldCallStore
from gateway.services.notify import Notifier

log = logging.getLogger("gateway.approvals")
WAIT = 5.0  # seconds an operator's request waits for a save the store refuses
_RETRY = (0.05, 1.0)  # first and longest pause between two tries


class Finishes:
    """``wake`` tells this process's waiting agents that a call changed."""

    def __init__(self, store: HeldCallStore, notifier: Notifier,
                 wake: Callable[[str], None], wait: float = WAIT) -> None:
        self.store = store
        self.notifier = notifier
        self.wake = wake
        self.wait = wait
        self._saving: set[asyncio.Task[HeldCall | None]] = set()

    async def __call__(self, held: HeldCall, status: ApprovalStatus,
                       response: dict[str, Any] | None, journal_id: str | None,
                       error: str | None) -> HeldCall | None:
        """The call as saved; None when the store has not taken it within ``wait``
        seconds (the save goes on, until ``held.lease_until``) or by then."""
        task = asyncio.create_task(self._finish(held, status, response, journal_id, error))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        done, _ = await asyncio.wait({task}, timeout=self.wait)
        return task.result() if done else None

    async def settled(self, timeout: float) -> None:
        """Until every save under way lands, or ``timeout`` seconds (then they stop: the
        sweeper calls those calls ``unknown`` when their leases lapse)."""
        if not self._saving:
            return
        _, left = await asyncio.wait(set(self._saving), timeout=timeout)
        for task in left:
            log.error("the end of a held call was not saved before shutdown; it becomes "
                      "unknown when its claim's lease lapses")
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _finish(self, held: HeldCall, status: ApprovalStatus,
                      response: dict[str, Any] | None, journal_id: str | None,
                      error: str | None) -> HeldCall | None:
        saved = await self._save(held, status, response, journal_id, error)
        if saved is None:
            return None
        final = await self._read(held)
        if not saved and final.status is not status:  # the sweeper took it meanwhile
            log.error("approval %s ended %s, but its claim had lapsed: left %s", held.id,
                      status.value, final.status.value)
            return final
        # saved, or an earlier try committed it (its answer lost): recorded with it
        self.wake(held.id)
        self.notifier.publish(f"approval.{status.value}", public_view(final))
        return final

    async def _save(self, held: HeldCall, status: ApprovalStatus,
                    response: dict[str, Any] | None, journal_id: str | None,
                    error: str | None) -> bool | None:
        """Tried until the store answers or the claim's lease ends (None). False: the
        call was no longer ``approved`` (its lease lapsed and the sweeper took it, or an
        earlier try committed without its answer reaching us)."""
        pause = _RETRY[0]
        record = audit_item(held.decided_by or "gateway", f"approval.{status.value}", held,
                            {"status": response["status"] if response else None,
                             "error": error, "journal_id": journal_id})
        while True:
            try:
                return await self.store.finish_held(held.id, status, response, journal_id,
                                                    error, sent_secrets(held), record)
            except Exception as exc:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                left = ((held.lease_until - utcnow()).total_seconds()
                        if held.lease_until is not None else 0.0)
                if left <= pause:
                    log.error("could not save that approval %s ended %s before its claim's "
                              "lease ended (%s): %s", held.id, status.value,
                              iso(held.lease_until) if held.lease_until else "none", exc)
                    return None
                log.warning("could not save that approval %s ended %s (%s); the answer is "
                            "kept and the save retried", held.id, status.value, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RETRY[1])

    async def _read(self, held: HeldCall) -> HeldCall:
        """The call as the store has it now (after a save it answered, it answers this)."""
        try:
            return await self.store.get_held(held.id) or held
        except Exception:
            log.warning("could not read approval %s after saving it", held.id)
            return held

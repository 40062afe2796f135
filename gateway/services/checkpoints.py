"""Signed checkpoints of the audit log, made and anchored off the request path.

A background task follows the audit table's tail (every ``POLL`` seconds, one
indexed read of what is new) and keeps the Merkle tree over the records'
chain hashes in memory (``core.merkle.Tree``). It signs a checkpoint
``interval`` seconds after the tree first grew past the last one, and at once
when the new records include a kill-switch engage or release, an approval
decision or a rollback: the tail read sees those from every process on the
store, wherever they were appended. Each checkpoint is stored, then handed
to every anchor by the anchor's own task, which retries with backoff; a
slow or failing anchor never delays signing, and nothing here ever delays a
write.

A checkpoint is used (``latest``: served without a round trip, anchored,
counted as signed) only once it is known durable: this process's own insert,
whose commit had the synchronous standby's answer, or one read and then
confirmed by the store's ``flush``. On PostgreSQL a commit cut while waiting for
the standby leaves its row visible on the primary alone; another process's
checkpoint (or this one's, cut and tried again) may be such a row, and a
failover would lose what was published. That confirmation is a task of its own
(``_confirm``): while the standby is down it waits, and the loop keeps
following the tail meanwhile; it signs nothing new until the confirmation has
its answer, for that insert's commit would wait for the standby too.

A log must never sign two checkpoints that contradict each other. At start,
the tree rebuilt from the store is held against the newest stored
checkpoint; if records it covered are gone or changed, nothing more is
signed, and ``/v1/health`` says so.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.core.merkle import Tree, record_leaf
from gateway.core.model import iso, utcnow
from gateway.core.note import Checkpoint, NoteSigner
from gateway.deadline import cancelled, within
from gateway.errors import AnchorError
from gateway.ports import CheckpointStore
from gateway.services.anchors import Anchor

log = logging.getLogger("gateway.audit.checkpoints")
POLL = 0.2  # seconds between two reads of the audit table's tail
PAGE = 10_000
BACKOFF_MAX = 300.0
CONFIRM_RETRY = 5.0  # seconds at most between two tries of a confirmation that failed
URGENT = frozenset({"killswitch.engage", "killswitch.release", "approval.approve",
                    "approval.reject", "approval.expired", "rollback.start", "rollback.resume",
                    "rollback.finish"})


class StoredCheckpointLike(Protocol):
    size: int
    at: datetime
    root: str
    note: str
    anchors: dict[str, Any]


class Checkpoints:
    def __init__(self, store: CheckpointStore, signer: NoteSigner | None,
                 anchors: list[Anchor], interval: float, origin: str) -> None:
        self._store = store
        self.signer = signer
        self.anchors = anchors
        self.interval = interval
        self.origin = origin
        self.tree = Tree()
        self.signed = 0  # the size of the newest checkpoint
        self.latest: StoredCheckpointLike | None = None
        self.problem: str | None = None  # the log no longer matches what was signed
        self._grew_at: float | None = None
        self._urgent = False
        self._wake = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.pending: StoredCheckpointLike | None = None  # read, not yet known durable
        self._confirming: asyncio.Task[None] | None = None
        self._stopping = False
        self._handed: dict[str, asyncio.Event] = {a.state.name: asyncio.Event() for a in anchors}

    # Life ------------------------------------------------------------------
    async def start(self) -> None:
        await self.sync()
        kept = await self._store.checkpoints(limit=1)
        if kept:
            self._check_against(kept[-1])
            for anchor in self.anchors:
                took = kept[-1].anchors.get(anchor.state.name)
                if took is not None:
                    anchor.restore(took)
                    anchor.state.ok, anchor.state.size = True, kept[-1].size
            self._confirm_later(kept[-1])  # its commit may have been cut: on the primary alone
        if self.signer is None:
            log.warning("no audit_signing_key (GATEWAY_AUDIT_SIGNING_KEY): the audit log's "
                        "checkpoints are not signed; set one")
            return
        self._tasks.append(asyncio.create_task(self._run()))
        for anchor in self.anchors:
            self._tasks.append(asyncio.create_task(self._anchor(anchor)))
            if self.latest is not None and anchor.state.size < self.latest.size:
                self._handed[anchor.state.name].set()  # not taken before the restart

    async def stop(self) -> None:
        """The last records get their checkpoint (anchored at the next start)."""
        running = bool(self._tasks)
        self._stopping = True
        tasks = self._tasks + ([self._confirming] if self._confirming else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._confirming = [], None
        if running:
            try:
                await self.sync()
                if not self.problem and self.tree.size > self.signed:
                    await self.sign()
            except Exception:
                log.exception("audit checkpoints: the last checkpoint could not be signed")
        for anchor in self.anchors:
            await anchor.close()

    def nudge(self) -> None:
        """Sign now (an engage, a release, a decision, a rollback was just recorded)."""
        self._urgent = True
        self._wake.set()

    def _check_against(self, point: StoredCheckpointLike) -> None:
        if point.size > self.tree.size:
            self.problem = (f"the audit log holds {self.tree.size} records, but checkpoint "
                            f"{point.size} was signed: records were removed")
        elif base64.b64encode(self.tree.root(point.size)).decode() != point.root:
            self.problem = (f"the audit records up to seq {point.size} no longer match the "
                            "signed checkpoint: records were changed")
        if self.problem:
            log.error("audit log: %s; no further checkpoint is signed", self.problem)

    # The tree --------------------------------------------------------------
    async def sync(self) -> int:
        """Read the records appended since the last read into the tree; its new size."""
        async with self._sync_lock:
            overlap = self.tree.size > 0  # the first read starts at the tree's last leaf
            while True:
                rows = await self._store.audit_leaves(self.tree.size - overlap, PAGE + overlap)
                if overlap:
                    if not self._holds_last(rows):
                        await self._lost_tail()
                        if self.problem:
                            return self.tree.size
                        overlap = self.tree.size > 0
                        continue
                    rows, overlap = rows[1:], False
                for seq, action, chain_hash in rows:
                    if seq != self.tree.size + 1:
                        self.problem = (f"the audit log skips from seq {self.tree.size} to "
                                        f"{seq}")
                        return self.tree.size
                    self.tree.append(record_leaf(chain_hash))
                    if action in URGENT:
                        self._urgent = True
                if rows and self._grew_at is None:
                    self._grew_at = time.monotonic()
                if len(rows) < PAGE:
                    return self.tree.size

    def _holds_last(self, rows: list[tuple[int, str, str]]) -> bool:
        """The store's first row (read from the tree's last leaf on) is that leaf's record."""
        size = self.tree.size
        return bool(rows) and rows[0][0] == size \
            and record_leaf(rows[0][2]) == self.tree.leaf(size - 1)

    async def _lost_tail(self) -> None:
        """The store no longer holds the tree's last leaf as it was read: it lost its
        tail (on PostgreSQL the proxy's decisions are committed without waiting for the
        standby; a crash and the standby's promotion drop the last of them, and the new
        primary appends other records at those seqs). The tree forgets every leaf
        after the last one the store still holds unchanged, and follows the store from
        there. What was signed was durable (a checkpoint's commit waits for the
        standby, and for the records before it), so a loss reaching into a signed
        checkpoint is the log contradicting it: nothing more is signed."""
        size, base = self.tree.size, max(self.signed - 1, 0)
        keep = base
        for seq, _, chain_hash in await self._store.audit_leaves(base, size - base):
            if seq != keep + 1 or record_leaf(chain_hash) != self.tree.leaf(keep):
                break
            keep += 1
        if keep < self.signed:
            self.problem = (f"the audit records up to seq {self.signed} no longer match the "
                            "signed checkpoint: records were removed or changed")
            log.error("audit log: %s; no further checkpoint is signed", self.problem)
            return
        log.warning("audit log: the store holds %d of the %d records read before (its "
                    "primary changed); following it from there", keep, size)
        self.tree.truncate(keep)
        self._grew_at = None

    # Signing ---------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await within(self._wake.wait(), POLL)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.sync()
                if self._due():
                    await self.sign()
            except Exception:
                if cancelled():  # a cancel a driver turned into an error: stop
                    raise
                log.exception("audit checkpoints: signing failed; trying again")
                await asyncio.sleep(1.0)

    def _due(self) -> bool:
        if self.problem or self.tree.size <= self.signed:
            self._urgent = False
            return False
        if self.pending is not None:  # its confirmation first (``_confirm``): then due
            return False
        waited = time.monotonic() - (self._grew_at or 0.0)
        return self._urgent or waited >= self.interval

    async def sign(self) -> None:
        assert self.signer is not None
        size = self.tree.size
        point = Checkpoint(self.origin, size, self.tree.root(size))
        note = self.signer.sign(point.text())
        root = base64.b64encode(point.root).decode()
        urgent, self._urgent = self._urgent, False  # the records read from now on set it
        try:
            inserted = await self._store.add_checkpoint(size, root, note, utcnow())
            kept = await self._store.checkpoints(limit=1, upto=size)
            if not kept:
                raise RuntimeError(f"audit checkpoint {size} is not in the store after "
                                   "its insert")
        except BaseException:
            self._urgent = self._urgent or urgent  # tried again as soon as it was due
            raise
        if inserted:  # its commit had the standby's answer
            self._use(kept[-1])
        else:  # another's (or this one's, cut and tried again): maybe on the primary alone
            self._confirm_later(kept[-1])

    def _use(self, point: StoredCheckpointLike) -> None:
        """``point`` is durable: served, anchored, the base of what is signed next."""
        if self.latest is None or point.size >= self.latest.size:
            self.latest = point
        if point.size >= self.signed:
            self.signed = point.size
            # records read since (while its insert or its confirmation waited): their
            # interval runs from now, or they are signed at once if one was urgent
            self._grew_at = time.monotonic() if self.tree.size > point.size else None
        for event in self._handed.values():
            event.set()

    def _confirm_later(self, point: StoredCheckpointLike) -> None:
        """``point`` was read from the store; it is used once ``_confirm`` knows it
        durable. One confirmation at a time; nothing new is signed meanwhile."""
        if self._stopping or self._confirming is not None:
            return
        self.pending = point
        self._confirming = asyncio.create_task(self._confirm(point))

    async def _confirm(self, point: StoredCheckpointLike) -> None:
        """Until the store's ``flush`` (a commit that waits for the synchronous standby,
        issued after ``point`` was read: its answer covers ``point``'s commit) returns,
        then whether the store still holds ``point``: after a failover the new primary
        may not (the flush then ran there). As long as it takes (the standby down): the
        tail is followed meanwhile, by ``_run``."""
        delay = POLL
        try:
            while True:
                try:
                    await self._store.flush()
                    kept = await self._store.checkpoints(limit=1, upto=point.size)
                    break
                except Exception as exc:
                    if cancelled():  # a cancel a driver turned into an error: stop
                        raise
                    log.warning("audit checkpoint %d: its confirmation failed (%s); trying "
                                "again in %.1f s", point.size, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, CONFIRM_RETRY)
            if kept and kept[-1].size == point.size and kept[-1].root == point.root:
                self._use(kept[-1])
            else:
                log.warning("audit checkpoint %d was not kept by the store (its commit was "
                            "cut, and the primary changed); not used", point.size)
        finally:
            self.pending, self._confirming = None, None
            self._wake.set()

    def confirmed(self, point: StoredCheckpointLike) -> bool:
        """``point`` is one this process knows durable (no flush needed to serve it)."""
        latest = self.latest
        return latest is not None and latest.size == point.size and latest.root == point.root

    # Anchoring -------------------------------------------------------------
    async def _anchor(self, anchor: Anchor) -> None:
        state, handed = anchor.state, self._handed[anchor.state.name]
        delay = 1.0
        while True:
            await handed.wait()
            handed.clear()
            point = self.latest
            if point is None or point.size <= state.size:
                continue
            try:
                result = await anchor.deliver(point.size, point.note, self.tree.consistency)
            except (AnchorError, ValueError) as exc:
                state.ok, state.last_error, state.failures = False, str(exc), state.failures + 1
                state.retry_at = utcnow() + timedelta(seconds=delay)
                log.warning("audit anchor %s: %s; retrying in %.0f s", state.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                handed.set()
                continue
            delay, took = 1.0, utcnow()
            await self._keep(anchor, point, result, took)  # kept first: what health says
            state.ok, state.size, state.last_ok_at = True, point.size, took  # the export has
            state.last_error, state.failures, state.retry_at = None, 0, None

    async def _keep(self, anchor: Anchor, point: StoredCheckpointLike,
                    result: dict[str, Any], took: datetime) -> None:
        """Record what the anchor took with the checkpoint (a witness's cosignature joins
        the note's signature lines)."""
        record = {**result, "ok_at": iso(took)}
        point.anchors[anchor.state.name] = record
        note = None
        cosignatures = [c for c in result.get("cosignatures", []) if c + "\n" not in point.note]
        if cosignatures:
            note = point.note + "".join(c + "\n" for c in cosignatures)
            point.note = note
        try:
            await self._store.anchor_checkpoint(point.size, point.anchors, note)
        except Exception:
            log.exception("audit anchor %s: could not record its answer", anchor.state.name)

    def health(self) -> dict[str, Any]:
        """``audit``: the newest checkpoint and the log's state; ``anchors``: each anchor's."""
        latest = self.latest
        newest = None if latest is None else {
            "size": latest.size, "root": latest.root, "at": iso(latest.at)}
        return {"audit": {"signing": self.signer is not None, "records": self.tree.size,
                          "checkpoint": newest, "problem": self.problem},
                "anchors": [a.state.to_json() for a in self.anchors]}

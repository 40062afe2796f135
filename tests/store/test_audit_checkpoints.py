"""The audit log's checkpoints in a started gateway, on every backend: the signing key,
"at once" after an engage, the table, restarts, and a log that lost records."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.core.merkle import Tree, record_leaf
from gateway.core.note import Checkpoint, NoteVerifier
from gateway.errors import AuditKeyError, SettingsError
from gateway.store.audit_key import key_file_for, signing_seed
from gateway.store.engine import parse_url
from tests.harness import policy_text, serve_app, started_gateway, until

KEY = base64.b64encode(bytes(range(32))).decode()
POLICY = {"crm.yaml": policy_text("http://127.0.0.1:9", "- id: all\n  match: {path: \"/**\"}\n"
                                  "  action: allow\n")}


def test_without_a_key_sqlite_gets_a_0600_key_file_beside_the_database(tmp_path: Path) -> None:
    url = parse_url(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    seed, source = signing_seed(url, None)
    path = key_file_for(tmp_path / "gateway.db")
    assert path.name == "gateway.db.audit.key" and str(path) in source
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signing_seed(url, None)[0] == seed and seed is not None and len(seed) == 32
    assert signing_seed(url, KEY)[0] == bytes(range(32))
    postgres = parse_url("postgresql+asyncpg://u@h/db")
    assert signing_seed(postgres, None)[0] is None
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(AuditKeyError):
            signing_seed(url, bad)


async def test_a_checkpoint_is_signed_at_once_after_an_engage(tmp_path: Path,
                                                              store_url: str) -> None:
    async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                               audit_checkpoint_interval=3600) as h:
        viewer = h.as_role("viewer")
        assert (await h.admin.get("/v1/audit/checkpoint", headers=viewer)).status_code == 404
        assert (await h.engage()).status_code == 200  # an interval of an hour: only "at once"
        note = await until(lambda: _note(h, viewer), "a checkpoint after the engage")
        vkey = (await h.admin.get("/v1/audit/key", headers=viewer)).text
        point = NoteVerifier.parse(vkey).open(note)
        records = (await h.admin.get("/v1/audit", headers=viewer)).json()["items"]
        assert point.size == len(records) == 1 and records[0]["action"] == "killswitch.engage"
        assert point.root == Tree([record_leaf(records[0]["hash"])]).root()
        health = (await h.admin.get("/v1/health")).json()
        assert health["audit"]["checkpoint"]["size"] == 1 and health["audit"]["problem"] is None
        assert (await h.admin.get("/v1/audit/key")).status_code == 401  # viewers only


async def _note(h: object, viewer: dict[str, str]) -> str | None:
    response = await h.admin.get("/v1/audit/checkpoint", headers=viewer)  # type: ignore[attr-defined]
    return response.text if response.status_code == 200 else None


async def test_a_restart_on_a_log_that_lost_records_signs_nothing_more(tmp_path: Path,
                                                                       store_url: str) -> None:
    async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                               audit_checkpoint_interval=3600) as h:
        assert (await h.engage()).status_code == 200
        assert (await h.release()).status_code == 200
        await until(lambda: h.gateway.checkpoints.signed == 2, "checkpoint 2")
        store = h.gateway.store
    # the newest record disappears while the gateway is down (a crash, or a hand)
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    engine = create_async_engine(store_url)
    async with engine.begin() as connection:
        if store_url.startswith("postgresql"):
            await connection.execute(text("SET session_replication_role = replica"))
        await connection.execute(text("DELETE FROM audit WHERE seq = 2"))
    await engine.dispose()
    assert store is not None
    async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                               audit_checkpoint_interval=0.1) as h:
        health = (await h.admin.get("/v1/health")).json()
        assert "holds 1 records, but checkpoint 2 was signed" in health["audit"]["problem"]
        assert (await h.engage()).status_code == 200
        await h.gateway.checkpoints.sync()
        assert h.gateway.checkpoints.signed == 2  # nothing new was signed over the gap


async def test_a_bad_signing_key_stops_the_start(tmp_path: Path, store_url: str) -> None:
    with pytest.raises(SettingsError, match="audit_signing_key"):
        async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key="abc"):
            pass


async def test_a_witness_that_holds_another_size_is_caught_up_from_it(tmp_path: Path,
                                                                    store_url: str) -> None:
    """409 Conflict names the size the witness cosigned: the proof is rebuilt from there."""
    from gateway.core.note import NoteSigner
    from tests.e2e.witness import Witness

    vkey = NoteSigner("agent-gateway/audit", bytes(range(32))).verifier_key()
    with Witness.serving(vkey) as witness:
        anchors = [{"kind": "witness", "url": witness.url, "name": "w"}]
        async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                                   audit_checkpoint_interval=3600, audit_anchors=anchors) as h:
            assert (await h.engage()).status_code == 200
            await until(lambda: witness.size == 1, "the witness to cosign size 1")
        await _forget_anchors(store_url)  # the gateway no longer knows what the witness holds
        async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                                   audit_checkpoint_interval=3600, audit_anchors=anchors) as h:
            assert (await h.release()).status_code == 200
            await until(lambda: witness.size == 2, "the witness to cosign size 2")
            assert 409 in witness.answers and witness.proofs_checked == 1
            note = await until(lambda: _note(h, h.as_role("viewer")), "the checkpoint")
            await until(lambda: _cosigned(h, witness), "the cosignature kept on the note")
            assert NoteVerifier.parse(vkey).open(note).size == 2


async def _cosigned(h: Any, witness: Any) -> bool:
    return witness.cosigned(await _note(h, h.as_role("viewer")) or "")


async def _forget_anchors(store_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    engine = create_async_engine(store_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE audit_checkpoints SET anchors = '{}'"))
    await engine.dispose()


async def test_a_failing_timestamp_authority_is_retried_and_shown(tmp_path: Path,
                                                                  store_url: str) -> None:
    """The rfc3161 anchor sends a DER TimeStampReq; a refusal or an answer that is not a
    timestamp is a failure /v1/health shows, and writes are not held up by it."""
    bodies: list[tuple[str, bytes]] = []
    answers = [(503, b"busy"), (200, b"not a timestamp response")]

    async def authority(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        bodies.append((dict(scope["headers"]).get(b"content-type", b"").decode(), body))
        status, answer = answers[min(len(bodies), len(answers)) - 1]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/timestamp-reply")]})
        await send({"type": "http.response.body", "body": answer})

    async with serve_app(authority) as url:
        anchors = [{"kind": "rfc3161", "url": url + "/tsr", "name": "tsa"}]
        async with started_gateway(tmp_path, store_url, POLICY, audit_signing_key=KEY,
                                   audit_checkpoint_interval=3600, audit_anchors=anchors) as h:
            assert (await h.engage()).status_code == 200
            state = await until(lambda: _anchor_after(h, failures=2), "two failed attempts")
            assert state["ok"] is False and "not a timestamp" in state["last_error"]
            assert state["last_ok_at"] is None and state["retry_at"] is not None
            assert (await h.release()).status_code == 200  # a write still goes through
    content_type, request = bodies[0]
    assert content_type == "application/timestamp-query"
    assert request[:1] == b"\x30" and len(request) > 40  # a DER SEQUENCE: the TimeStampReq


async def _anchor_after(h: Any, failures: int) -> dict[str, Any] | None:
    health = (await h.admin.get("/v1/health")).json()
    state: dict[str, Any] = health["anchors"][0]
    return state if state["failures"] >= failures else None


class _Tail:
    """The part of the store the checkpoint service reads, in memory (a narrow unit test)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str]] = []
        self.stored: list[Any] = []

    def add(self, action: str) -> None:
        seq = len(self.rows) + 1
        self.rows.append((seq, action, f"{seq:064x}"))

    async def audit_leaves(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        return self.rows[after:after + limit]

    async def add_checkpoint(self, size: int, root: str, note: str, at: Any) -> bool:
        from gateway.store.checkpoints import StoredCheckpoint
        self.stored.append(StoredCheckpoint(size, root, note, at, {}))
        return True

    async def anchor_checkpoint(self, size: int, anchors: dict[str, Any],
                                note: str | None = None) -> None:
        return None

    async def checkpoints(self, limit: int = 1000, upto: int | None = None) -> list[Any]:
        return [p for p in self.stored if upto is None or p.size <= upto][-limit:]

    async def flush(self) -> None:
        return None


@pytest.mark.parametrize("action, at_once", [
    ("killswitch.engage", True), ("killswitch.release", True), ("approval.approve", True),
    ("approval.reject", True), ("rollback.start", True), ("rollback.finish", True),
    ("call.allow", False), ("approval.held", False), ("policy.reload", False)])
async def test_which_records_are_signed_at_once(action: str, at_once: bool) -> None:
    from gateway.core.note import NoteSigner
    from gateway.services.checkpoints import Checkpoints
    tail = _Tail()
    service = Checkpoints(tail, NoteSigner("t/audit", bytes(32)), [], 3600, "t/audit")
    await service.start()
    try:
        tail.add("call.allow")
        tail.add(action)
        await service.sync()
        assert service._due() is at_once
    finally:
        await service.stop()  # signs what is left: the last records get their checkpoint
    assert [p.size for p in tail.stored] == [2]


async def test_a_store_that_lost_its_unsigned_tail_is_followed_from_what_it_holds() -> None:
    """A failover: the new primary lacks the last records read (never on its standby)
    and appends others at their seqs. The tree follows the store, not its memory; a
    loss reaching into a signed checkpoint is a problem, and nothing more is signed."""
    from gateway.core.note import NoteSigner
    from gateway.services.checkpoints import Checkpoints
    tail = _Tail()
    service = Checkpoints(tail, NoteSigner("t/audit", bytes(32)), [], 3600, "t/audit")
    for _ in range(3):
        tail.add("call.allow")
    await service.sync()
    await service.sign()
    for _ in range(3):
        tail.add("call.allow")
    assert await service.sync() == 6
    del tail.rows[4:]  # seqs 5 and 6 lost; then 5..7 are other records
    for n in range(3):
        tail.rows.append((5 + n, "call.allow", f"{0xfff0 + n:064x}"))
    assert await service.sync() == 7 and service.problem is None
    assert service.tree.root() == Tree([record_leaf(h) for _, _, h in tail.rows]).root()
    assert await service.sync() == 7  # and nothing more to read

    del tail.rows[2:]  # the records of the signed checkpoint (size 3) are lost
    tail.add("call.allow")
    tail.rows[-1] = (3, "call.allow", f"{0xeeee:064x}")
    await service.sync()
    assert service.problem is not None and "seq 3" in service.problem
    assert not service._due()


class _Standby(_Tail):
    """A store whose ``flush`` waits (its synchronous standby down) until ``back`` is set,
    and whose insert of a size already stored fails, as the table's key makes it."""

    def __init__(self) -> None:
        super().__init__()
        self.back = asyncio.Event()
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1
        await self.back.wait()

    async def add_checkpoint(self, size: int, root: str, note: str, at: Any) -> bool:
        if any(p.size == size for p in self.stored):
            return False
        return await super().add_checkpoint(size, root, note, at)

    def signed_elsewhere(self, size: int) -> None:
        """A checkpoint another process inserted (its commit maybe cut: on the primary
        alone)."""
        from gateway.core.note import NoteSigner
        from gateway.store.checkpoints import StoredCheckpoint
        root = Tree([record_leaf(h) for _, _, h in self.rows[:size]]).root()
        note = NoteSigner("t/audit", bytes(32)).sign(
            Checkpoint("t/audit", size, root).text())
        self.stored.append(StoredCheckpoint(size, base64.b64encode(root).decode(), note,
                                            None, {}))


async def _started_over_a_cut_checkpoint() -> tuple[_Standby, Any]:
    """A checkpoint service started over three records and a checkpoint of them it read
    from the store (another's, its commit cut: on the primary alone) while the standby
    is down: its confirmation waits for ``store.back``."""
    from gateway.core.note import NoteSigner
    from gateway.services.checkpoints import Checkpoints
    store = _Standby()
    for _ in range(3):
        store.add("call.allow")
    store.signed_elsewhere(3)
    service = Checkpoints(store, NoteSigner("t/audit", bytes(32)), [], 3600, "t/audit")
    await service.start()
    return store, service


async def test_a_read_checkpoint_is_used_once_confirmed_and_the_tail_followed_meanwhile(
        ) -> None:
    """The newest checkpoint, read from the store, may be one whose commit was cut while
    the primary waited for its standby: nothing uses it (``latest``: served, anchored)
    before the store's flush answers. Meanwhile the loop keeps reading the tail (a
    confirmation awaited inside it stopped that while the standby was down), and signs
    nothing new, for that insert's commit would wait for the standby too."""
    store, service = await _started_over_a_cut_checkpoint()
    try:
        assert service.pending is not None and service.pending.size == 3
        assert service.latest is None and service.health()["audit"]["checkpoint"] is None
        store.add("killswitch.engage")  # signed at once, were the standby not down
        store.add("call.allow")
        await until(lambda: service.tree.size == 5, "the tail followed while confirming")
        assert service.latest is None and [p.size for p in store.stored] == [3]
        assert store.flushes == 1

        store.back.set()
        await until(lambda: service.latest is not None and service.latest.size == 5,
                    "the engage signed once the checkpoint before it was confirmed")
        assert [p.size for p in store.stored] == [3, 5] and service.pending is None
    finally:
        await service.stop()


async def test_a_read_checkpoint_the_store_no_longer_holds_after_its_flush_is_not_used(
        ) -> None:
    """The flush answered from a new primary (a failover) that never had the cut
    checkpoint: it is not used, and the next one is signed over what the store has."""
    store, service = await _started_over_a_cut_checkpoint()
    try:
        assert service.pending is not None
        store.stored.clear()  # the primary died; its standby, promoted, lacks the row
        store.back.set()
        await until(lambda: service.pending is None, "the confirmation's end")
        assert service.latest is None and service.signed == 0
        store.add("killswitch.engage")
        await until(lambda: service.latest is not None, "a checkpoint after it")
        assert service.latest is not None and service.latest.size == 4
        assert [p.size for p in store.stored] == [4] and service.problem is None
    finally:
        await service.stop()

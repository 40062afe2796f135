"""The audit log as someone else can check it: a real gateway, a file anchor, a witness.

One gateway process (SQLite and PostgreSQL) signs checkpoints of its audit log
and hands them to a file and to the test's witness, which checks every
consistency proof before it cosigns. The test checks what an auditor would:
the served checkpoint verifies with the served key, its root is the Merkle
root of the records, the proofs verify, the witness cosigned; then it edits,
swaps and deletes rows in the database itself, and ``gateway audit verify``
names each against the anchored checkpoints. Writes go on while the witness
is down, and ``/v1/health`` says it is.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway.core.merkle import verify_consistency, verify_inclusion
from gateway.core.note import NoteVerifier, split_notes
from tests.e2e.procs import Proc, run_gateway, start_gateway, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.witness import Witness
from tests.harness import AGENT_KEY, TOKENS, policy_text, poll

AGENT = {"X-Gateway-Key": AGENT_KEY}
VIEWER = {"Authorization": f"Bearer {TOKENS['viewer']}"}
APPROVER = {"Authorization": f"Bearer {TOKENS['approver']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
SEED = hashlib.sha256(b"the test's audit key").digest()
ORIGIN = "gateway.test/audit"
RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
"""


def _vkey() -> str:
    from gateway.core.note import NoteSigner
    return NoteSigner(ORIGIN, SEED).verifier_key()


def naive_root(hashes: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH, written out again: nothing shared with the gateway's tree."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashlib.sha256(b"\x00" + hashes[0]).digest()
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(hashes[:k]) + naive_root(hashes[k:])).digest()


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    with Recorder.serving() as recorder:
        yield recorder


@pytest.fixture
def witness() -> Iterator[Witness]:
    with Witness.serving(_vkey()) as served:
        yield served


@pytest.fixture
def gateway(tmp_path: Path, store_url: str, upstream: Recorder,
            witness: Witness) -> Iterator[Proc]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, store_url, audit_checkpoint_interval=0.3,
                            audit_origin=ORIGIN,
                            audit_anchors=[{"kind": "file", "path": str(tmp_path / "anchor.notes"),
                                            "name": "file"},
                                           {"kind": "witness", "url": witness.url,
                                            "name": "witness", "timeout": 3,
                                            "key": witness.vkey()}])
    proc = start_gateway(config, env={"GATEWAY_AUDIT_SIGNING_KEY":
                                      base64.b64encode(SEED).decode()})
    yield proc
    proc.stop()


class Database:
    """SQL on the gateway's own database, as an operator with access to it could run."""

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self, *statements: str) -> list[Any]:
        if self.url.startswith("sqlite"):
            with sqlite3.connect(make_url(self.url).database or "") as connection:
                out = [connection.execute(s).fetchall() for s in statements]
            connection.close()
            return out
        return asyncio.run(self._pg(statements))

    async def _pg(self, statements: tuple[str, ...]) -> list[Any]:
        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        connection = await asyncpg.connect(dsn)
        try:
            # the append-only trigger stops mistakes, not a superuser: one who bypasses it
            await connection.execute("SET session_replication_role = replica")
            async with connection.transaction():
                return [[tuple(r) for r in await connection.fetch(s)] for s in statements]
        finally:
            await connection.close()


def _records(admin: httpx.Client) -> list[dict[str, Any]]:
    return admin.get("/v1/audit", params={"limit": 10000}).json()["items"]


def _verify(tmp_path: Path, admin: httpx.Client, name: str,
            *more: str) -> tuple[int, str]:
    export = tmp_path / f"{name}.jsonl"
    response = admin.get("/v1/audit/export", params={"format": "jsonl"})
    assert response.status_code == 200
    export.write_bytes(response.content)
    (tmp_path / "key").write_text(admin.get("/v1/audit/key").text)
    done = run_gateway("audit", "verify", "--export", str(export),
                       "--checkpoint", str(tmp_path / "anchor.notes"),
                       "--key", str(tmp_path / "key"), *more)
    return done.returncode, done.stdout + done.stderr


def test_an_auditor_can_check_the_log_and_catches_tampering(
        gateway: Proc, witness: Witness, tmp_path: Path, store_url: str) -> None:
    proxy, admin_url = gateway.urls
    with (httpx.Client(base_url=proxy, headers=AGENT, timeout=30) as agent,
          httpx.Client(base_url=admin_url, headers=ADMIN, timeout=30) as admin):
        _scenario(agent, admin, witness, tmp_path, Database(store_url))


def _scenario(agent: httpx.Client, admin: httpx.Client, witness: Witness, tmp_path: Path,
              db: Database) -> None:
    for n in range(5):
        assert agent.patch(f"/crm/items/{n}", json={"n": n}).status_code == 200
    assert admin.post("/v1/killswitch/engage", json={"reason": "audit test"}).status_code == 200
    assert admin.post("/v1/killswitch/release", json={"reason": "done"}).status_code == 200

    # the checkpoint verifies with the served key, and its root is the records' root
    vkey = admin.get("/v1/audit/key", headers=VIEWER).text.strip()
    assert vkey == _vkey()
    records = poll(lambda: (r := _records(admin)) and len(r) >= 7 and r, "7 audit records")
    size = len(records)
    witnessed = poll(lambda: witness.size >= size and admin.get("/v1/audit/checkpoint").text,
                     "the witness to cosign the whole log")
    note = admin.get("/v1/audit/checkpoint", headers=VIEWER)
    assert note.headers["content-type"].startswith("text/plain")
    point = NoteVerifier.parse(vkey).open(witnessed)
    assert point.origin == ORIGIN and point.size >= size
    leaves = [bytes.fromhex(r["hash"]) for r in _records(admin)][:point.size]
    assert point.root == naive_root(leaves)

    # inclusion proofs for every record, consistency proofs from every smaller size
    for seq in range(1, point.size + 1):
        proof = admin.get("/v1/audit/proof/inclusion",
                          params={"seq": seq, "size": point.size}).json()
        assert (proof["leaf_index"], proof["tree_size"]) == (seq - 1, point.size)
        leaf = hashlib.sha256(b"\x00" + leaves[seq - 1]).digest()
        assert verify_inclusion(leaf, seq - 1, point.size,
                                [base64.b64decode(h) for h in proof["hashes"]], point.root)
    for old in range(0, point.size + 1):
        proof = admin.get("/v1/audit/proof/consistency",
                          params={"from": old, "to": point.size}).json()
        assert verify_consistency(old, point.size, naive_root(leaves[:old]), point.root,
                                  [base64.b64decode(h) for h in proof["hashes"]])
    assert admin.get("/v1/audit/proof/inclusion",
                     params={"seq": 1, "size": 10_000}).status_code == 404

    # the witness cosigned (after checking consistency proofs), and the note keeps it
    poll(lambda: witness.cosigned(admin.get("/v1/audit/checkpoint").text),
         "the witness's cosignature on the served checkpoint")
    assert 200 in witness.answers
    anchored = split_notes((tmp_path / "anchor.notes").read_text())
    assert anchored and all(NoteVerifier.parse(vkey).signed(n) for n in anchored)

    # the witness goes down: writes go on, health says so, it catches up once back
    witness.down = True
    for n in range(5, 8):
        assert agent.patch(f"/crm/items/{n}", json={"n": n}).status_code == 200
    health = poll(lambda: (h := admin.get("/v1/health").json()) and any(
        a["name"] == "witness" and a["ok"] is False for a in h["anchors"]) and h,
        "health to show the witness failing")
    assert health["status"] == "ok"
    failing = next(a for a in health["anchors"] if a["name"] == "witness")
    assert failing["failures"] >= 1 and "503" in failing["last_error"]
    total = len(_records(admin))
    poll(lambda: any(a["name"] == "file" and a["size"] >= total
                     for a in admin.get("/v1/health").json()["anchors"]),
         "the file anchor to take the newer checkpoint")
    witness.down = False
    poll(lambda: witness.size >= total, "the witness to cosign again", timeout=30)
    assert witness.proofs_checked >= 1  # it extended its own size with a proof it checked
    assert 422 not in witness.answers and 403 not in witness.answers
    # health says an anchor took a checkpoint once its answer is kept (the export has it)
    healthy = poll(lambda: (h := admin.get("/v1/health").json()) and all(
        a["ok"] and a["size"] >= total for a in h["anchors"]) and h,
        "every anchor's answer on the newest checkpoint kept")
    assert healthy["audit"]["checkpoint"]["size"] >= total

    # an auditor's check of the intact export passes
    code, output = _verify(tmp_path, admin, "intact", "--witness-key", witness.vkey())
    assert code == 0, output
    assert f"{total} records" in output
    assert f"cosigned by witness.test/w1 up to size {total}" in output

    # an edited record is named
    (original,) = db.run("SELECT detail FROM audit WHERE seq = 3")[0]
    db.run("UPDATE audit SET detail = '{\"edited\": true}' WHERE seq = 3")
    code, output = _verify(tmp_path, admin, "edited")
    assert code == 1 and "seq 3:" in output, output
    db.run("UPDATE audit SET detail = '" + original[0].replace("'", "''") + "' WHERE seq = 3")
    assert _verify(tmp_path, admin, "restored")[0] == 0

    # two records swapped are named
    db.run("UPDATE audit SET seq = -4 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = 5",
           "UPDATE audit SET seq = 5 WHERE seq = -4")
    code, output = _verify(tmp_path, admin, "swapped")
    assert code == 1 and "seq 4:" in output, output
    db.run("UPDATE audit SET seq = -4 WHERE seq = 4", "UPDATE audit SET seq = 4 WHERE seq = 5",
           "UPDATE audit SET seq = 5 WHERE seq = -4")

    # the newest records deleted: the chain alone says ok, the checkpoints do not
    db.run(f"DELETE FROM audit WHERE seq > {total - 2}")
    assert admin.get("/v1/audit/verify").json()["ok"] is True  # what issue 19 saw
    code, output = _verify(tmp_path, admin, "truncated")
    assert code == 1, output
    assert f"checkpoint of size {total}, export holds {total - 2}" in output

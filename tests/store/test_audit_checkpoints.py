"""The audit log's checkpoints in a started gateway, on every backend: the signing key,
"at once" after an engage, the table, restarts, and a log that lost records."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from gateway.core.merkle import Tree, record_leaf
from gateway.core.note import NoteVerifier
from gateway.settings import SettingsError
from gateway.store.audit_key import AuditKeyError, key_file_for, signing_seed
from gateway.store.engine import parse_url
from tests.harness import policy_text, started_gateway, until

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

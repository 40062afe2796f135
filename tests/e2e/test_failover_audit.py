"""The audit log across a failover, with real processes: two gateways signing
checkpoints on a multi-host ``database_url`` (a primary and its synchronous
standby, ``tests.replicated``), and the primary crashing with audit records
that only it had.

The proxy's decisions are appended without waiting for the standby
(``PostgresHotPath.transaction``, ``durable=False``): a crash may lose the
last of them, and the promoted standby's chain is then a prefix of the old
one. What must hold: no checkpoint is signed, stored, served or anchored over
records the new primary lacks, and the checkpoints signed after the promotion
are over the records it has, so ``gateway audit verify`` passes the export
with every note seen, before and after.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import Proc, run_gateway, start_gateways, write_settings
from tests.e2e.recorder import Recorder
from tests.e2e.test_failover_processes import (
    ADMIN,
    BOT,
    pair,
    patch,
    run,
    upstream,
    waiting_for_standby,
    writes_go,
)
from tests.harness import policy_text
from tests.harness import poll as _poll
from tests.replicated import Pair

__all__ = ["pair", "upstream"]  # fixtures shared with test_failover_processes

SEED = hashlib.sha256(b"the failover test's audit key").digest()
RULES = """
- id: items
  match: {methods: [GET, PATCH], path: "/items/{id}"}
  action: allow
- id: gated
  match: {methods: [PATCH], path: "/gate/{id}"}
  action: allow
- id: no-deletes
  match: {methods: [DELETE], path: "/items/{id}"}
  action: deny
"""

poll = functools.partial(_poll, timeout=60)


def signing_gateways(tmp_path: Path, pair: Pair, upstream: Recorder,
                     interval: float) -> Iterator[list[Proc]]:
    import base64

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text(upstream.url, RULES))
    config = write_settings(tmp_path, pair.url(), engage_wait=1.0, upstream_timeout=3,
                            executor_lease=3, audit_checkpoint_interval=interval,
                            audit_anchors=[{"kind": "file", "name": "file",
                                            "path": str(tmp_path / "anchor.notes")}])
    started = start_gateways(config, 2, env={"GATEWAY_AUDIT_SIGNING_KEY":
                                             base64.b64encode(SEED).decode()})
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def gateways(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    yield from signing_gateways(tmp_path, pair, upstream, 3600)  # at once after an engage


@pytest.fixture
def eager(tmp_path: Path, pair: Pair, upstream: Recorder) -> Iterator[list[Proc]]:
    yield from signing_gateways(tmp_path, pair, upstream, 0.5)  # decisions signed too


def last_seq(pair: Pair, port: int) -> int:
    return int(run(pair, port, "gateway", "SELECT coalesce(max(seq), 0) AS n FROM audit")[0]["n"])


def signed_size(pair: Pair, port: int) -> int:
    return int(run(pair, port, "gateway",
                   "SELECT coalesce(max(size), 0) AS n FROM audit_checkpoints")[0]["n"])


def health(admin: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{admin}/v1/health", headers=ADMIN, timeout=30).json()


def served(*admins: str) -> list[str]:
    """The newest checkpoint as each process serves it: one it knows durable, or one the
    store's flush confirms; else (a checkpoint the other process signed, and the standby
    down) 503: it may be on the primary alone."""
    notes = []
    for admin in admins:
        answer = httpx.get(f"{admin}/v1/audit/checkpoint", headers=ADMIN, timeout=30)
        if answer.status_code == 200:
            notes.append(answer.text)
        else:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "store_unavailable", answer.text
    return notes


def engage_and_release(admin: str) -> None:
    """Records after which a checkpoint is signed at once."""
    for action in ("engage", "release"):
        done = httpx.post(f"{admin}/v1/killswitch/{action}", headers=ADMIN,
                          json={"reason": "failover audit"}, timeout=30)
        assert done.status_code == 200, done.text


def test_checkpoints_across_a_failover_cover_only_what_the_new_primary_has(
        pair: Pair, gateways: list[Proc], tmp_path: Path) -> None:
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in gateways)
    assert writes_go(proxy_a, "a") and writes_go(proxy_b, "b")
    engage_and_release(admin_a)
    poll(lambda: signed_size(pair, pair.primary_port) == last_seq(pair, pair.primary_port),
         "a checkpoint over every record")
    # and both processes know it: neither is still signing one of its own over those
    # records (its insert would wait for the standby stopped below, and its tree with it)
    size = signed_size(pair, pair.primary_port)
    poll(lambda: all((health(a)["audit"]["checkpoint"] or {}).get("size") == size
                     for a in (admin_a, admin_b)), "both processes at that checkpoint")

    # the standby goes away: the decisions below are committed on the primary alone
    pair.stop(pair.standby)
    before = last_seq(pair, pair.primary_port)
    for n, proxy in enumerate((proxy_a, proxy_b, proxy_a, proxy_b)):
        denied = httpx.delete(f"{proxy}/crm/items/d{n}", headers=BOT, timeout=30)
        assert denied.status_code == 403, denied.text
    # a decision's record is appended just after its answer (the audit trail's batch):
    # read before the last one was, the count fell one short, and no tree ever matched it
    poll(lambda: last_seq(pair, pair.primary_port) >= before + 4, "the decisions' records")
    held = last_seq(pair, pair.primary_port)
    # both checkpoint services have read them (their trees hold them); none is due to
    # sign (decisions wait for the interval), so none waits for the standby meanwhile
    poll(lambda: all(health(a)["audit"]["records"] == held for a in (admin_a, admin_b)),
         "both processes' trees holding the primary's records")
    served_before = served(admin_a, admin_b)

    # the primary crashes; the standby, which never had those records, takes over
    fail_over(pair, proxy_a, proxy_b)
    kept = last_seq(pair, pair.standby_port)
    assert kept < held, "the crash lost no audit record: the test saw nothing"

    # the new primary's chain grows past what the old one held, and is signed
    n = 0
    while last_seq(pair, pair.standby_port) <= held + 2:
        assert writes_go((proxy_a, proxy_b)[n % 2], f"more-{n}")
        n += 1
    engage_and_release(admin_a)
    final = last_seq(pair, pair.standby_port)
    poll(lambda: signed_size(pair, pair.standby_port) >= final, "a checkpoint after it")

    # the chain verifies, and every note ever served or anchored is over these records
    verified = httpx.get(f"{admin_b}/v1/audit/verify", headers=ADMIN, timeout=30).json()
    assert verified["ok"] is True, verified
    assert (tmp_path / "anchor.notes").exists()  # the file anchor's notes: checked too
    verify(admin_b, tmp_path, served_before)
    for admin in (admin_a, admin_b):
        audit = health(admin)["audit"]
        assert audit["problem"] is None, audit


def naming(pair: Pair, port: int, entry: str) -> int:
    """How many audit records name journal entry ``entry``."""
    return int(run(pair, port, "gateway", "SELECT count(*) AS n FROM audit WHERE detail "
                   f"LIKE '%\"{entry}\"%'")[0]["n"])


def test_the_audit_record_of_a_sent_write_lost_in_a_failover_is_appended_again(
        pair: Pair, gateways: list[Proc], upstream: Recorder) -> None:
    """The write's intent is on the standby (it was sent), then the standby goes away:
    its outcome and its decision's audit record commit on the primary alone, which
    crashes. The new primary has the entry; the process that sent it, alive, appends
    its audit record again from the journal, as recovery does for a dead process's."""
    proxy_a, proxy_b = gateways[0].urls[0], gateways[1].urls[0]
    assert writes_go(proxy_a, "warm")
    answers: list[httpx.Response] = []
    sending = threading.Thread(target=lambda: answers.append(patch(proxy_a, "/gate/w", BOT)))
    sending.start()
    try:
        poll(upstream.gated.is_set, "the write at the upstream")
        pair.stop(pair.standby)
    finally:
        upstream.gate.set()
        sending.join(timeout=60)
    assert [a.status_code for a in answers] == [200], answers
    entry = str(run(pair, pair.primary_port, "gateway",
                    "SELECT id FROM journal WHERE path = '/gate/w'")[0]["id"])
    poll(lambda: naming(pair, pair.primary_port, entry) == 1, "its record on the primary")

    fail_over(pair, proxy_a, proxy_b)
    assert run(pair, pair.standby_port, "gateway",
               f"SELECT 1 FROM journal WHERE id = '{entry}'"), "the sent write's entry was lost"
    poll(lambda: naming(pair, pair.standby_port, entry) >= 1,
         "the sent write's audit record on the new primary")
    verified = httpx.get(f"{gateways[1].urls[1]}/v1/audit/verify", headers=ADMIN,
                         timeout=30).json()
    assert verified["ok"] is True, verified
    assert naming(pair, pair.standby_port, entry) == 1


def fail_over(pair: Pair, *proxies: str) -> None:
    """The primary crashes, its standby is started and promoted; writes go through every
    proxy again."""
    pair.crash_primary()
    pair.start(pair.standby)
    pair.promote()
    for n, proxy in enumerate(proxies):
        poll(lambda p=proxy, n=n: writes_go(p, f"after-{n}"), f"writes through {proxy}",
             interval=0.1)


def note_size(note: str) -> int:
    return int(note.splitlines()[1])  # a C2SP checkpoint: origin, size, root


def verify(admin: str, tmp_path: Path, notes: list[str]) -> None:
    """``gateway audit verify`` of the export against every note anchored or served."""
    export = tmp_path / "export.jsonl"
    response = httpx.get(f"{admin}/v1/audit/export", params={"format": "jsonl"},
                         headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    export.write_bytes(response.content)
    key = tmp_path / "key"
    key.write_text(httpx.get(f"{admin}/v1/audit/key", headers=ADMIN, timeout=30).text)
    seen = []
    for i, note in enumerate(notes):
        (tmp_path / f"served-{i}.note").write_text(note)
        seen += ["--checkpoint", str(tmp_path / f"served-{i}.note")]
    anchored = tmp_path / "anchor.notes"
    if anchored.exists():
        seen += ["--checkpoint", str(anchored)]
    done = run_gateway("audit", "verify", "--export", str(export), "--key", str(key), *seen)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_checkpoint_whose_commit_was_cut_is_not_used_before_the_standby_has_it(
        pair: Pair, eager: list[Proc], tmp_path: Path) -> None:
    """The standby is down, so a checkpoint's commit waits for it; cut that connection
    (``pg_terminate_backend``) and the row is visible on the primary, on no standby.
    The processes see it (the other's insert of that size fails; the signer's retry
    too): neither serves nor anchors it before a flush has the standby's answer, for
    the primary may die next and the standby take over without it."""
    (proxy_a, admin_a), (proxy_b, admin_b) = (g.urls for g in eager)
    assert writes_go(proxy_a, "a") and writes_go(proxy_b, "b")
    poll(lambda: signed_size(pair, pair.primary_port) == last_seq(pair, pair.primary_port),
         "a checkpoint over every record")
    durable = signed_size(pair, pair.primary_port)

    pair.stop(pair.standby)
    for n, proxy in enumerate((proxy_a, proxy_b)):  # decisions: on the primary alone
        denied = httpx.delete(f"{proxy}/crm/items/d{n}", headers=BOT, timeout=30)
        assert denied.status_code == 403, denied.text
    held = last_seq(pair, pair.primary_port)

    def cut() -> bool:  # a checkpoint is committed by the ORM: its wait is in COMMIT
        for pid in waiting_for_standby(pair, "COMMIT%"):
            run(pair, pair.primary_port, "postgres", f"SELECT pg_terminate_backend({pid})")
        return signed_size(pair, pair.primary_port) >= held
    poll(cut, "a checkpoint's commit cut while it waited for the standby", interval=0.05)
    notes = served(admin_a, admin_b)  # the newest the standby has, or 503; never the cut one
    assert [note_size(note) for note in notes if note_size(note) > durable] == [], notes

    fail_over(pair, proxy_a, proxy_b)
    assert signed_size(pair, pair.standby_port) < held, "the cut checkpoint survived"
    n = 0
    while last_seq(pair, pair.standby_port) <= held + 2:
        assert writes_go((proxy_a, proxy_b)[n % 2], f"more-{n}")
        n += 1
    final = last_seq(pair, pair.standby_port)
    poll(lambda: signed_size(pair, pair.standby_port) >= final, "a checkpoint after it")
    verify(admin_b, tmp_path, notes)
    for admin in (admin_a, admin_b):
        audit = health(admin)["audit"]
        assert audit["problem"] is None, audit

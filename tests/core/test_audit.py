"""The audit hash chain: verify names the first record that does not follow."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.audit import GENESIS, chain_hash, link, verify
from gateway.core.model import AuditRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def chain(n: int = 5) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        prev = records[-1] if records else None
        records.append(link(prev, T0 + timedelta(seconds=i), "alice", "killswitch.engage",
                            {"n": i, "reason": f"incident {i}"}))
    return records


def test_link_chains_records() -> None:
    records = chain(3)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS
    assert records[1].prev_hash == records[0].hash
    assert records[2].prev_hash == records[1].hash
    assert len({r.hash for r in records}) == 3
    first = records[0]
    assert first.hash == chain_hash(GENESIS, 1, first.at, first.actor, first.action, first.detail)


def test_hash_does_not_depend_on_detail_key_order() -> None:
    a = chain_hash(GENESIS, 1, T0, "x", "y", {"a": 1, "b": 2})
    assert a == chain_hash(GENESIS, 1, T0, "x", "y", {"b": 2, "a": 1})
    assert a != chain_hash(GENESIS, 1, T0, "x", "y", {"a": 1, "b": 3})


@pytest.mark.parametrize("n", [0, 1, 5])
def test_verify_ok(n: int) -> None:
    records = chain(n)
    result = verify(records)
    assert result.ok is True
    assert result.count == n
    assert result.first_bad_seq is None
    assert result.head == (records[-1].hash if records else GENESIS)
    assert result.to_json() == {"ok": True, "count": n, "head": result.head,
                                "first_bad_seq": None}


def edit(records: list[AuditRecord], index: int, **changes: object) -> list[AuditRecord]:
    out = list(records)
    out[index] = replace(out[index], **changes)  # type: ignore[arg-type]
    return out


def relinked(records: list[AuditRecord], index: int, **changes: object) -> list[AuditRecord]:
    """Edit a record and recompute its own hash, as a forger would."""
    out = edit(records, index, **changes)
    r = out[index]
    out[index] = replace(r, hash=chain_hash(r.prev_hash, r.seq, r.at, r.actor, r.action,
                                            r.detail))
    return out


R = chain(5)


@pytest.mark.parametrize(("records", "bad_seq"), [
    (edit(R, 2, detail={"n": 2, "reason": "nothing happened"}), 3),
    (edit(R, 0, detail={}), 1),
    (edit(R, 4, actor="mallory"), 5),
    (edit(R, 1, action="killswitch.release"), 2),
    (edit(R, 3, at=T0 + timedelta(days=1)), 4),
    (edit(R, 1, hash="f" * 64), 2),
    (edit(R, 1, prev_hash="0" * 64), 2),
    (relinked(R, 2, detail={"n": 2, "reason": "forged"}), 4),  # its successor no longer links
    (R[:2] + R[3:], 4),                        # a middle record deleted
    (R[1:], 2),                                # the first record deleted
    (R[:1] + [R[2], R[1]] + R[3:], 3),         # two records swapped
    (R[:3] + [R[4], R[3]], 5),                 # the last two swapped
    (R[:3] + [R[2]] + R[3:], 3),               # a record repeated
    ([replace(r, seq=r.seq + 10) for r in R], 11),  # renumbered
])
def test_verify_names_the_first_bad_record(records: list[AuditRecord],
                                           bad_seq: int | None) -> None:
    result = verify(records)
    assert result.first_bad_seq == bad_seq
    assert result.ok is (bad_seq is None)


def test_relinking_the_head_is_undetectable() -> None:
    # The chain proves order and integrity of what precedes the head; the head itself must
    # be anchored elsewhere (that is what `head` in /v1/audit/verify is for).
    forged = relinked(R, 4, actor="mallory")
    assert verify(forged).ok
    assert verify(forged).head != verify(R).head


def test_verify_reports_the_head_before_the_bad_record() -> None:
    result = verify(R[:2] + R[3:])
    assert result.head == R[1].hash
    assert result.count == 3


def test_record_json() -> None:
    record = R[0]
    assert record.to_json() == {
        "seq": 1, "at": "2024-05-01T12:00:00.000000Z", "actor": "alice",
        "action": "killswitch.engage", "detail": {"n": 0, "reason": "incident 0"},
        "prev_hash": GENESIS, "hash": record.hash,
    }

"""The audit log as a hash chain.

Each record's hash is sha256 over a canonical JSON encoding of its fields and
the previous record's hash, so editing, deleting or reordering any record
breaks every hash after it. ``verify`` names the first record that does not
follow from its predecessor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.jsontext import sorted_bytes
from gateway.core.model import AuditRecord, iso

GENESIS = "0" * 64


def canonical(seq: int, at: datetime, actor: str, action: str, detail: dict[str, Any]) -> bytes:
    body = {"seq": seq, "at": iso(at), "actor": actor, "action": action, "detail": detail}
    return sorted_bytes(body)  # json.dumps(sort_keys=True, ...) byte for byte


def canonical_head(at: datetime, actor: str, action: str, detail: dict[str, Any]) -> str:
    """``canonical`` up to the ``seq``, which sorts last: a store that assigns the
    seq itself appends ``f"{seq}}}"`` and hashes as ``chain_hash`` does.

    >>> canonical_head(datetime(2026, 1, 1), "a", "x", {})[-7:]
    ',"seq":'
    """
    text = canonical(0, at, actor, action, detail).decode()
    if not text.endswith(',"seq":0}'):
        raise ValueError("the canonical form no longer ends with the seq")
    return text[:-2]


def chain_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str,
               detail: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(canonical(seq, at, actor, action, detail))
    return digest.hexdigest()


def link(prev: AuditRecord | None, at: datetime, actor: str, action: str,
         detail: dict[str, Any]) -> AuditRecord:
    """The next record after ``prev`` (None for the first one), linked to it by hash."""
    seq = prev.seq + 1 if prev else 1
    prev_hash = prev.hash if prev else GENESIS
    return AuditRecord(seq, at, actor, action, detail, prev_hash,
                       chain_hash(prev_hash, seq, at, actor, action, detail))


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    count: int
    head: str
    first_bad_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "head": self.head,
                "first_bad_seq": self.first_bad_seq}


def verify(records: Iterable[AuditRecord]) -> Verification:
    """Walk the chain oldest first; the first record that does not follow is bad."""
    prev_hash, expected_seq, count, head = GENESIS, 1, 0, GENESIS
    for record in records:
        count += 1
        recomputed = chain_hash(prev_hash, record.seq, record.at, record.actor, record.action,
                                record.detail)
        if (record.seq != expected_seq or record.prev_hash != prev_hash
                or record.hash != recomputed):
            return Verification(False, count, head, record.seq)
        prev_hash, head, expected_seq = record.hash, record.hash, record.seq + 1
    return Verification(True, count, head, None)

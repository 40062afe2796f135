"""The audit chain in the store: one way to append a link.

Every record names the hash of the one before it (``core.audit.seal``), so an
append reads the last record and writes after it in one transaction that no
other chain writer can interleave with: ``WRITE_LOCK`` on PostgreSQL (an
advisory lock, taken by every writer of audit and freezes, and by the
``gateway_engage`` function of migration 0017), the database's write lock on
SQLite. An operator's record, a batch of the proxy's decisions and the record
of a freeze change all go through ``append_in``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.core.audit import seal
from gateway.core.model import AuditRecord
from gateway.store import codec
from gateway.store.hot import Tx

WRITE_LOCK = 0x67775F7772697465  # "gw_write": the advisory lock over audit and freezes

AuditItem = tuple[str, str, dict[str, Any], datetime]  # actor, action, detail, at


async def append_in(tx: Tx, items: list[AuditItem]) -> list[AuditRecord]:
    """The next links of the chain, (actor, action, detail, at) in order, in ``tx``
    (which holds ``WRITE_LOCK``)."""
    last = await tx.fetch(codec.SELECT_LAST_AUDIT)
    previous = codec.audit_from_values(last[0]) if last else None
    records = []
    for actor, action, detail, at in items:
        previous = seal(previous, at, actor, action, detail)
        records.append(previous)
    await tx.executemany(codec.INSERT_AUDIT, [codec.audit_params(r) for r in records])
    return records

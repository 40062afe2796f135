"""Tripwire windows in the store: a limit of 5 is 5 for every process, across restarts.

``TripwireCounts`` is a mixin of ``SqlStore``. A window (a tripwire and what it
counts by, e.g. one agent) is kept as buckets of a twentieth of its length in
``tripwire_counts`` (0012). A write adds itself to its bucket and reads the
window's sum in one statement (an upsert whose RETURNING sums at most 20 earlier
rows of the primary key); so processes never miss each other's writes. The
window covers between 20 and 21 buckets: an event counts up to a twentieth of
the window longer, never shorter. Buckets older than the window are dropped
now and then by the writer that passes.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.store.hot import HotPath

# One statement: the write's bucket +1, and the window's sum (the earlier buckets read by
# a subquery of RETURNING, which SQLite and PostgreSQL both allow, plus this bucket as
# it now is). Parameters: name, bucket, value, then (name, first, bucket) twice.
_EARLIER = ("coalesce((SELECT sum(o.{0}) FROM tripwire_counts o "
            "WHERE o.name = ? AND o.bucket >= ? AND o.bucket < ?), 0)")
_ADD = (
    "INSERT INTO tripwire_counts (name, bucket, events, total) VALUES (?, ?, 1, ?) "
    "ON CONFLICT (name, bucket) DO UPDATE SET events = tripwire_counts.events + 1, "
    "total = tripwire_counts.total + excluded.total "
    f"RETURNING events + {_EARLIER.format('events')}, total + {_EARLIER.format('total')}")
_DROP = "DELETE FROM tripwire_counts WHERE name = ? AND bucket < ?"
BUCKETS = 20


class TripwireCounts:
    """``count_tripwire`` of ``ports.Store``, through the driver (``hot.py``): it runs
    before every write a tripwire with a window watches, on the reply path. On
    PostgreSQL the statement is its own transaction, one round trip (through
    SQLAlchemy it was five: the pool's ping, BEGIN, the statement, COMMIT and the
    reset); on SQLite a write transaction on the hot path's connection."""

    _postgres: bool  # SqlStore's

    if TYPE_CHECKING:  # SqlStore's
        def _hot_path(self) -> HotPath: ...

    async def count_tripwire(self, name: str, value: float, window: float,
                             now: datetime) -> tuple[int, float]:
        """Add one event of ``value`` to window ``name``; its count and total before it."""
        key = f"{name}@{window:g}"
        bucket = int(now.timestamp() // (window / BUCKETS))
        first = bucket - BUCKETS
        args = (key, bucket, value, key, first, bucket, key, first, bucket)
        hot = self._hot_path()
        if self._postgres:
            events, total = (await hot.fetch(_ADD, args))[0]
        else:  # a transaction checks the file is still the store's (``SqliteFile``)
            async with hot.transaction() as tx:
                events, total = (await tx.fetch(_ADD, args))[0]
        if random.random() < 0.02:  # noqa: S311 - housekeeping, not security
            await hot.execute(_DROP, (key, first))
        return int(events) - 1, float(total) - value

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

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# One statement: the write's bucket +1, and the window's sum (the earlier buckets read by
# a subquery of RETURNING, which SQLite and PostgreSQL both allow, plus this bucket as
# it now is).
_ADD = text(
    "INSERT INTO tripwire_counts (name, bucket, events, total) VALUES (:name, :bucket, 1, :v) "
    "ON CONFLICT (name, bucket) DO UPDATE SET events = tripwire_counts.events + 1, "
    "total = tripwire_counts.total + excluded.total "
    "RETURNING events + coalesce((SELECT sum(o.events) FROM tripwire_counts o "
    "WHERE o.name = :name AND o.bucket >= :first AND o.bucket < :bucket), 0), "
    "total + coalesce((SELECT sum(o.total) FROM tripwire_counts o "
    "WHERE o.name = :name AND o.bucket >= :first AND o.bucket < :bucket), 0)")
_DROP = text("DELETE FROM tripwire_counts WHERE name = :name AND bucket < :first")
BUCKETS = 20


class TripwireCounts:
    """``count_tripwire`` of ``ports.Store``."""

    _writer: AsyncEngine  # writes: BEGIN IMMEDIATE on SQLite

    async def count_tripwire(self, name: str, value: float, window: float,
                             now: datetime) -> tuple[int, float]:
        """Add one event of ``value`` to window ``name``; its count and total before it."""
        key = f"{name}@{window:g}"
        bucket = int(now.timestamp() // (window / BUCKETS))
        first = bucket - BUCKETS
        async with self._writer.begin() as connection:
            events, total = (await connection.execute(_ADD, {
                "name": key, "bucket": bucket, "v": value, "first": first})).one()
            if random.random() < 0.02:  # noqa: S311 - housekeeping, not security
                await connection.execute(_DROP, {"name": key, "first": first})
        return int(events) - 1, float(total) - value

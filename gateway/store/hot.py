"""The calls made on every proxied write, straight through the driver.

Journal intents and outcomes (batched by ``gateway.group_commit.GroupCommit``), the kill
switch's generation and the audit chain bypass the ORM: a SQLModel session
commit measured 0.68 ms where a prepared asyncpg insert took 0.19 ms. On
PostgreSQL an asyncpg pool prepares and caches each statement per
connection. On SQLite one dedicated connection in autocommit mode does the
work on the loop's thread; an asyncio.Lock keeps its calls from interleaving.
One implementation per dialect: ``hot_postgres.py``, ``hot_sqlite.py``; what
differs between the two stays behind ``HotPath``. Most SQL is written once with ``?`` placeholders and
``numbered`` rewrites it for asyncpg. Errors are not caught here: the caller
turns them into ``journal_unavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, Protocol

from gateway.core.model import AuditItem, AuditRecord, Freeze
from gateway.ports import Bus, FreezeChange, Notice


@lru_cache(maxsize=32)
def numbered(sql: str) -> str:
    """Rewrite qmark placeholders as PostgreSQL's numbered ones.

    The statements given here never hold a literal ``?``.

    >>> numbered("UPDATE t SET a = ? WHERE id = ?")
    'UPDATE t SET a = $1 WHERE id = $2'
    """
    first, *rest = sql.split("?")
    return first + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))


class Tx(Protocol):
    """Statements inside one transaction of the hot path."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]: ...


class HotPath(Protocol):
    """What the store does through the driver; each dialect's way is its own."""

    async def execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; the number of rows it touched."""

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Sequence[Any]]: ...

    def transaction(self, locks: Sequence[int] = (), durable: bool = True,
                    ) -> AbstractAsyncContextManager[Tx]:
        """A write transaction, committed when the block ends, else rolled back.

        ``locks``: advisory locks (PostgreSQL) taken, in order, with the BEGIN; on
        SQLite the transaction holds the database's write lock from its start,
        which excludes every other writer anyway. ``durable=False``: the commit
        need not wait for the disk (on PostgreSQL; SQLite's commits never do, see
        ``flush``)."""

    async def insert_intents(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Journal intents (``killswitch.INTENT_COLUMNS`` rows), each only if no active
        freeze covers it, decided in the statement that inserts (``killswitch``);
        whether each went in. Those that did are on disk when this returns."""

    async def update_outcomes(self, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Journal outcomes (``codec.outcome_params`` rows); whether each found its intent."""

    async def append_audit(self, items: Sequence[AuditItem], durable: bool = True,
                           ) -> list[AuditRecord]:
        """The next links of the audit chain, (actor, action, detail, at) in order, in
        one transaction holding the chain's lock (``audit.append_in``); ``durable`` as
        for ``transaction``."""

    async def engage(self, freeze: Freeze, announce: Notice | None = None) -> FreezeChange:
        """``freeze`` engaged, with its audit record, in one short transaction (unless
        one of its scope and target is in force: that one, unchanged); ``announce``
        sent at its commit where the database can (``ports.Bus.at_commit``)."""

    async def warm(self) -> None:
        """Make the first journal write as quick as the next, once the schema is
        current (PostgreSQL: the writers' statements prepared; SQLite: nothing to do).
        A failure only logs: the first write then pays for it."""

    async def warm_engage(self) -> None:
        """Make the first ``engage`` as quick as the next: nothing engaged, recorded or
        announced (PostgreSQL: its session and plans; SQLite: nothing to do)."""

    async def probe(self) -> None:
        """One write transaction holding an UPDATE that matches no row; raises when the
        database cannot take a write now."""

    def bus(self, member: str) -> Bus:
        """The bus of the processes sharing this database (not started)."""

    async def flush(self) -> None:
        """Until every commit so far is on disk, and on PostgreSQL on the synchronous
        standby (what an intent needs before its send)."""

    async def close(self) -> None: ...

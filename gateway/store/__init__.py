"""The store adapter: SQLModel tables, Alembic migrations and ``SqlStore``.

``open_store(url)`` is what ``create_app`` calls; the store still needs
``await store.start()`` (connect and migrate) and ``await store.close()``.
"""

from gateway.store.sql import SqlStore


def open_store(database_url: str, fsync: bool = True) -> SqlStore:
    """A ``SqlStore`` for ``sqlite+aiosqlite:///FILE`` or ``postgresql+asyncpg://...``."""
    return SqlStore(database_url, fsync=fsync)


__all__ = ["SqlStore", "open_store"]

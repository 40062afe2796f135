"""The store adapter: SQLModel tables, Alembic migrations and ``sql.SqlStore``, the
``ports.Store`` on SQLite or PostgreSQL (``sql.open_store`` is what the wiring calls).

Nothing is imported here: a module of the store loads what it uses, not the whole store.
"""

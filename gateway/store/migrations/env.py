"""Alembic environment for the gateway's schema.

It runs only on the connection that ``gateway.store.migrate`` hands in
(already inside a locked transaction), never from an alembic.ini URL, so
there is a single way the schema changes: the gateway starting up.
"""

from alembic import context
from sqlmodel import SQLModel

import gateway.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through gateway.store.migrate, which supplies a connection")

context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()

"""The journal key's home: configured, or a file beside an embedded SQLite database.

A key file ``<database>.key`` is created beside the database with 0600
permissions when no ``journal_key`` is configured; what it seals with is
``gateway.core.seal``.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from gateway.core.seal import KEY_BYTES, Sealer, decode_key


def new_key_text() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_file_for(database: Path) -> Path:
    return database.with_name(database.name + ".key")


def load_or_create_key_file(path: Path) -> bytes:
    """The key in ``path``, created (0600) when it does not exist yet.

    Several processes may start together (``--workers``): the key is written whole
    to a private temporary file, then linked into place, which fails if another
    process linked its key first (then that one is read). No process ever reads a
    file that exists but is not written yet.
    """
    if path.exists():
        return decode_key(path.read_text())
    fd, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_key_text() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process was first: its key is the key
    finally:
        os.unlink(temporary)
    return decode_key(path.read_text())


def sealer_for(journal_key: str | None, sqlite_database: Path | None) -> Sealer:
    """The sealer a gateway uses: the configured key, else the SQLite key file, else none."""
    if journal_key:
        return Sealer(decode_key(journal_key), "journal_key / GATEWAY_JOURNAL_KEY")
    if sqlite_database is not None:
        path = key_file_for(sqlite_database)
        return Sealer(load_or_create_key_file(path), f"key file {path}")
    return Sealer(None, "journal_key / GATEWAY_JOURNAL_KEY is not set")

"""The key that signs the audit log's checkpoints: configured, or a file beside the database.

``audit_signing_key`` (``GATEWAY_AUDIT_SIGNING_KEY``) is an Ed25519 seed, base64
of 32 bytes. Without one, an embedded SQLite store gets ``<database>.audit.key``
(0600), created the way the journal's key file is (``store.seal_key``: written whole,
then linked into place, so workers starting together agree on one key). A
PostgreSQL store without one signs nothing: a key that lived only in one
process would make every restart look like a different log.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from gateway.errors import AuditKeyError, SealError
from gateway.store.engine import is_postgres, sqlite_path
from gateway.store.seal_key import load_or_create_key_file

SEED_BYTES = 32


def decode_seed(text: str) -> bytes:
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/")
                               + "=" * (-len(cleaned) % 4), validate=True)
    except binascii.Error:
        raise AuditKeyError("audit_signing_key is not base64") from None
    if len(raw) != SEED_BYTES:
        raise AuditKeyError(f"audit_signing_key must be {SEED_BYTES} bytes of base64 (got "
                            f"{len(raw)}); make one with: python -c \"import os,base64;"
                            "print(base64.b64encode(os.urandom(32)).decode())\"")
    return raw


def key_file_for(database: Path) -> Path:
    return database.with_name(database.name + ".audit.key")


def signing_seed(url: Any, configured: str | None) -> tuple[bytes | None, str]:
    """The seed and where it came from (named in logs, never the key itself)."""
    if configured:
        return decode_seed(configured), "audit_signing_key / GATEWAY_AUDIT_SIGNING_KEY"
    if is_postgres(url):
        return None, "audit_signing_key / GATEWAY_AUDIT_SIGNING_KEY is not set"
    path = sqlite_path(url)
    if str(path) in ("", ":memory:"):
        return os.urandom(SEED_BYTES), "an in-memory database's own key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return load_or_create_key_file(key_file_for(path)), f"key file {key_file_for(path)}"
    except SealError as exc:
        raise AuditKeyError(f"the audit key file {key_file_for(path)}: {exc}") from None

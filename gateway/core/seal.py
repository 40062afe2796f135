"""Sealed values: what rollback and approval need, kept encrypted at rest.

Every view shows secrets redacted, and the store's readable columns hold only
that redacted form. What must survive exactly (a prior state's secret-named
fields, a held call's query and body, a binary prior) is sealed here with
AES-256-GCM (the ``cryptography`` library) into one text column:
``gw1:`` + urlsafe base64 of a random 12-byte nonce and the ciphertext of
the value's JSON. The row's purpose (``journal``, ``approval``, ...) is the
associated data, so a sealed value moved to another column does not open.

The key (32 bytes, base64) comes from ``journal_key`` in the settings or
``GATEWAY_JOURNAL_KEY``; on an embedded SQLite store without one, from a key
file beside the database (``gateway.store.seal_key``). A PostgreSQL store
without a key keeps no sealed values: what
would need them is marked ``UNSEALED`` and rollback refuses it with a reason
rather than restore something else. Opening with a missing or wrong key
raises ``SealError``, never returns a partial value.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.core.jsontext import compact
from gateway.errors import SealError

PREFIX = "gw1:"
PLAIN = "plain:"  # kept without a key (``Sealer.keep``)
UNSEALED = "unsealed"  # needed, but no key was configured when it was written
KEY_BYTES = 32


def decode_key(text: str) -> bytes:
    """A key as configured: base64 (standard or urlsafe) of 32 bytes."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(cleaned.replace("+", "-").replace("/", "_")
                                       + "=" * (-len(cleaned) % 4))
    except ValueError:
        raise SealError("journal_key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise SealError(f"journal_key must be {KEY_BYTES} bytes of base64 (got {len(raw)}); "
                        "make one with: python -c \"import os,base64;"
                        "print(base64.b64encode(os.urandom(32)).decode())\"")
    return raw


class Sealer:
    """Seals and opens JSON values; without a key it seals nothing (``UNSEALED``)."""

    def __init__(self, key: bytes | None, source: str = "journal_key") -> None:
        self._aead = AESGCM(key) if key is not None else None
        self.source = source  # named in errors: where the key was expected to come from

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    def seal(self, value: Any, purpose: str) -> str:
        if self._aead is None:
            return UNSEALED
        nonce = os.urandom(12)
        data = compact(value).encode()
        sealed = self._aead.encrypt(nonce, data, purpose.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def keep(self, value: Any, purpose: str) -> str:
        """``seal``, but without a key the value is kept as plain JSON (``plain:``): for
        what the gateway must still do exactly (execute an approved call). Warned at start."""
        if self._aead is None:
            return plain(value)
        return self.seal(value, purpose)

    def open(self, text: str, purpose: str) -> Any:
        if text.startswith(PLAIN):
            return json.loads(text[len(PLAIN):])
        if text == UNSEALED:
            raise SealError("no journal key was configured when this was written, so its "
                            "secret-named or binary values were not kept")
        if self._aead is None:
            raise SealError(f"no journal key is configured ({self.source}); the sealed "
                            "values cannot be opened")
        if not text.startswith(PREFIX):
            raise SealError("the sealed value is damaged (unknown format)")
        try:
            raw = base64.urlsafe_b64decode(text[len(PREFIX):])
            data = self._aead.decrypt(raw[:12], raw[12:], purpose.encode())
        except (InvalidTag, ValueError):
            raise SealError(f"the journal key ({self.source}) does not open this sealed value: "
                            "a different key sealed it, or it was altered") from None
        return json.loads(data)


NO_SEALER = Sealer(None, "none configured")


def plain(value: Any) -> str:
    """A value kept as plain JSON (``plain:``), key or no key: for what carries nothing
    a view would hide; ``Sealer.open`` reads it back like a sealed one."""
    return PLAIN + compact(value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)

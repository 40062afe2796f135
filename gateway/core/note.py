"""Signed checkpoints: C2SP signed notes (c2sp.org/signed-note) over tree heads.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text ``<origin>\\n<size>\\n
<base64 root>\\n``; the signed note adds an empty line and one line per
signature, ``— <key name> base64(4-byte key id || signature)``. The key id
is the first four bytes of SHA-256(name || 0x0A || 0x01 || Ed25519 public
key), and a verifier key is written ``<name>+<hex key id>+<base64(0x01 ||
public key)>``: what an auditor is handed to check checkpoints offline.
Witness cosignatures are further signature lines, kept as they came; a
verifier ignores lines from keys it does not know, as the spec requires.

>>> signer = NoteSigner("example.org/audit", bytes(32))
>>> note = signer.sign(Checkpoint("example.org/audit", 0, EMPTY_ROOT).text())
>>> NoteVerifier.parse(signer.verifier_key()).open(note).size
0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.core.merkle import EMPTY_ROOT, HASH_SIZE
from gateway.errors import NoteError

ED25519 = 0x01
COSIGNATURE = 0x04  # c2sp.org/tlog-cosignature, Ed25519
DASH = "\u2014 "
_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")
__all__ = ["EMPTY_ROOT", "Checkpoint", "CosignatureVerifier", "NoteError", "NoteSigner",
           "NoteVerifier", "key_id", "split_note"]


def key_id(name: str, type_byte: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([type_byte]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0] or not _SIZE.match(lines[1]):
            raise NoteError("not a checkpoint: expected origin, tree size and root hash lines")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error:
            raise NoteError("the checkpoint's root hash is not base64") from None
        if len(root) != HASH_SIZE:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        return cls(lines[0], int(lines[1]), root)


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The note text (with its final newline) and its signatures as (key name, bytes)."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a note may hold no control characters but newlines")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("not a signed note: no empty line before the signatures")
    text, signatures = note[:cut + 1], []
    for line in note[cut + 2:-1].split("\n"):
        if not line.startswith(DASH) or line.count(" ") != 2:
            raise NoteError(f"malformed signature line {line!r}")
        name, encoded = line[len(DASH):].split(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError(f"signature of {name} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"signature of {name} is too short")
        signatures.append((name, raw))
    return text, signatures


class NoteSigner:
    """Signs notes with an Ed25519 key given as its 32-byte seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        if len(seed) != 32:
            raise NoteError("an Ed25519 signing key is a 32-byte seed")
        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, ED25519, self.public_key)

    def verifier_key(self) -> str:
        encoded = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def signature_line(self, text: str) -> str:
        signature = self.key_id + self._key.sign(text.encode())
        return f"{DASH}{self.name} {base64.b64encode(signature).decode()}\n"

    def sign(self, text: str) -> str:
        if not text.endswith("\n"):
            raise NoteError("note text must end in a newline")
        return text + "\n" + self.signature_line(text)


def _parse_vkey(vkey: str, type_byte: int) -> tuple[str, bytes]:
    """The name and 32-byte Ed25519 public key of ``<name>+<hex id>+<base64(type || key)>``."""
    parts = vkey.strip().split("+", 2)  # the base64 key may hold a "+" itself
    if len(parts) != 3:
        raise NoteError("a verifier key reads <name>+<hex key id>+<base64 key>")
    name, hex_id, encoded = parts
    _check_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise NoteError("the verifier key's id or key is not hex / base64") from None
    if len(raw) != 33 or raw[0] != type_byte:
        raise NoteError(f"the verifier key is not an Ed25519 key of type 0x{type_byte:02x}")
    if key_id(name, type_byte, raw[1:]) != wanted:
        raise NoteError("the verifier key's id does not match its name and key")
    return name, raw[1:]


class _PublicKey:
    """One named Ed25519 public key of a signature type (``TYPE``), as its verifier key
    string names it: ``<name>+<hex id>+<base64(type || public key)>``."""

    TYPE: int

    def __init__(self, name: str, public_key: bytes) -> None:
        _check_name(name)
        self.name = name
        self.key_id = key_id(name, self.TYPE, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> Self:
        name, raw = _parse_vkey(vkey, cls.TYPE)
        return cls(name, raw)


class NoteVerifier(_PublicKey):
    """Checks the signature of one Ed25519 key (from its verifier key string) on notes."""

    TYPE = ED25519

    def signed(self, note: str) -> bool:
        """True if this key signed the note; a line of this key that fails raises."""
        text, signatures = split_note(note)
        found = False
        for name, raw in signatures:
            if name != self.name or raw[:4] != self.key_id:
                continue  # another key's (a witness's cosignature): ignored, per the spec
            try:
                self._key.verify(raw[4:], text.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {self.name} does not verify") from None
            found = True
        return found

    def open(self, note: str) -> Checkpoint:
        """The checkpoint of a note this key signed, else ``NoteError``."""
        if not self.signed(note):
            raise NoteError(f"the note has no signature of {self.name} "
                            f"(key id {self.key_id.hex()})")
        return Checkpoint.parse(split_note(note)[0])


class CosignatureVerifier(_PublicKey):
    """Checks a witness's Ed25519 cosignatures (c2sp.org/tlog-cosignature, type 0x04):
    ``key id || 8-byte big-endian time || signature`` over ``cosignature/v1``, the
    ``time`` line and the checkpoint text. Its key is ``<name>+<hex id>+<base64(0x04
    || public key)>``."""

    TYPE = COSIGNATURE

    def cosigned(self, note: str) -> int | None:
        """The time of this witness's valid cosignature on the note; None if it has none;
        ``NoteError`` if a line of this key does not verify."""
        text, signatures = split_note(note)
        for name, raw in signatures:
            if name != self.name or raw[:4] != self.key_id:
                continue
            if len(raw) != 4 + 8 + 64:
                raise NoteError(f"the cosignature of {self.name} is malformed")
            stamp = int(struct.unpack(">Q", raw[4:12])[0])
            try:
                self._key.verify(raw[12:], f"cosignature/v1\ntime {stamp}\n{text}".encode())
            except InvalidSignature:
                raise NoteError(f"the cosignature of {self.name} does not verify") from None
            return stamp
        return None


def split_notes(text: str) -> list[str]:
    """Several signed notes one after the other (as the file anchor writes them, each
    followed by an empty line), as separate notes."""
    notes: list[str] = []
    current: list[str] = []
    signing = False
    for line in text.split("\n"):
        if signing and not line.startswith(DASH):
            notes.append("\n".join(current) + "\n")
            current, signing = [], False
            if not line:
                continue
        if line.startswith(DASH) and current and current[-1] == "":
            signing = True
        if line or current:
            current.append(line)
    if signing:
        notes.append("\n".join(current) + "\n")
    elif any(current):
        raise NoteError("the text ends inside a note that has no signature")
    return notes

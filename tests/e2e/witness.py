"""A test witness speaking C2SP tlog-witness ``add-checkpoint``, served from a thread.

It holds one log's verifier key and the latest checkpoint it cosigned. For each
request it checks what the spec asks: the log's signature (403), the old size
against its own (409 with ``text/x.tlog.size``), the consistency proof (422),
then answers with an Ed25519 cosignature (c2sp.org/tlog-cosignature, type
0x04) over ``cosignature/v1``, the time and the checkpoint text. ``down``
makes it answer 503, as a witness being restarted would.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.core.merkle import verify_consistency
from gateway.core.note import NoteVerifier, split_note
from gateway.errors import NoteError

NAME = "witness.test/w1"


class Witness:
    def __init__(self, log_vkey: str) -> None:
        self.log = NoteVerifier.parse(log_vkey)
        self._key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"witness").digest())
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = hashlib.sha256(NAME.encode() + b"\n\x04" + self.public_key).digest()[:4]
        self.size, self.root = 0, b""
        self.down = False
        self.answers: list[int] = []  # every status it answered, in order
        self.proofs_checked = 0  # non-empty consistency proofs that verified
        self._lock = threading.Lock()
        self.url = ""

    def vkey(self) -> str:
        """Its cosignature key: <name>+<hex id>+<base64(0x04 || public key)>."""
        encoded = base64.b64encode(b"\x04" + self.public_key).decode()
        return f"{NAME}+{self.key_id.hex()}+{encoded}"

    def add_checkpoint(self, body: str) -> tuple[int, str, str]:
        head, sep, note = body.partition("\n\n")
        lines = head.split("\n")
        if not sep or not lines[0].startswith("old "):
            return 400, "text/plain", "malformed request\n"
        old, proof = int(lines[0][4:]), [base64.b64decode(x) for x in lines[1:]]
        try:
            point = self.log.open(note)
        except NoteError as exc:
            return 403, "text/plain", f"{exc}\n"
        if old > point.size:
            return 400, "text/plain", "old size is above the checkpoint size\n"
        with self._lock:
            if old != self.size:
                return 409, "text/x.tlog.size", f"{self.size}\n"
            if old == point.size and point.root != self.root:
                return 409, "text/x.tlog.size", f"{self.size}\n"
            if old and not verify_consistency(old, point.size, self.root, point.root, proof):
                return 422, "text/plain", "the consistency proof does not verify\n"
            if old and proof:
                self.proofs_checked += 1
            self.size, self.root = point.size, point.root
        stamp = int(time.time())
        text = split_note(note)[0]
        signed = f"cosignature/v1\ntime {stamp}\n{text}".encode()
        signature = self.key_id + struct.pack(">Q", stamp) + self._key.sign(signed)
        return 200, "text/plain", f"\u2014 {NAME} {base64.b64encode(signature).decode()}\n"

    def cosigned(self, note: str) -> bool:
        """Does ``note`` carry a valid cosignature of this witness?"""
        text, signatures = split_note(note)
        public = self._key.public_key()
        for name, raw in signatures:
            if name == NAME and raw[:4] == self.key_id:
                stamp = struct.unpack(">Q", raw[4:12])[0]
                public.verify(raw[12:], f"cosignature/v1\ntime {stamp}\n{text}".encode())
                return True
        return False

    @classmethod
    @contextmanager
    def serving(cls, log_vkey: str) -> Iterator[Witness]:
        witness = cls(log_vkey)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                if witness.down:
                    status, kind, text = 503, "text/plain", "down\n"
                elif self.path != "/add-checkpoint":
                    status, kind, text = 404, "text/plain", "not found\n"
                else:
                    status, kind, text = witness.add_checkpoint(body)
                witness.answers.append(status)
                data = text.encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        witness.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield witness
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

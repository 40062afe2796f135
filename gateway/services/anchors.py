"""Anchors: places outside the gateway's database that hold its signed checkpoints.

Each anchor receives the newest checkpoint and says what it kept:

- ``file``: the note is appended to a file (each note followed by an empty
  line; ``gateway audit verify --checkpoint FILE`` reads them all);
- ``witness``: a C2SP tlog-witness ``add-checkpoint`` request, carrying the
  consistency proof from the size the witness last cosigned; its cosignature
  lines are kept with the note. A 409 names the size it holds: the proof is
  rebuilt from there and sent once more;
- ``rfc3161``: a timestamp token over SHA-256 of the note from a timestamp
  authority (``rfc3161-client`` builds the request and reads the answer).

A failure raises ``AnchorError``; the checkpoint service retries with backoff
and shows the anchor's state in ``/v1/health``. Nothing here runs on a
request's path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.core.model import iso
from gateway.core.note import DASH, CosignatureVerifier
from gateway.errors import AnchorError, NoteError
from gateway.settings import AnchorSpec

ProofFor = Callable[[int, int], list[bytes]]  # (old size, new size) -> consistency proof


@dataclass(slots=True)
class AnchorState:
    """What ``/v1/health`` and the dashboard show of one anchor."""

    name: str
    kind: str
    ok: bool | None = None  # None: nothing handed to it yet
    size: int = 0  # the largest checkpoint it took
    last_ok_at: datetime | None = None
    last_error: str | None = None
    failures: int = 0  # in a row
    retry_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ok": self.ok, "size": self.size,
                "last_ok_at": iso(self.last_ok_at) if self.last_ok_at else None,
                "last_error": self.last_error, "failures": self.failures,
                "retry_at": iso(self.retry_at) if self.retry_at else None}


class Anchor:
    def __init__(self, spec: AnchorSpec) -> None:
        self.spec = spec
        self.state = AnchorState(spec.label(), spec.kind)

    def restore(self, kept: dict[str, Any]) -> None:
        """What the anchor took before a restart (from the newest checkpoint's record)."""

    async def deliver(self, size: int, note: str, proof_for: ProofFor) -> dict[str, Any]:
        """Hand the checkpoint over; the result is kept with the checkpoint."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FileAnchor(Anchor):
    async def deliver(self, size: int, note: str, proof_for: ProofFor) -> dict[str, Any]:
        path = Path(str(self.spec.path))
        try:
            await asyncio.to_thread(_append, path, note + "\n")
        except OSError as exc:
            raise AnchorError(f"cannot append to {path}: {exc.strerror or exc}") from None
        return {}


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class _HttpAnchor(Anchor):
    def __init__(self, spec: AnchorSpec) -> None:
        super().__init__(spec)
        self._client = httpx.AsyncClient(timeout=spec.timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, url: str, body: bytes, content_type: str) -> httpx.Response:
        try:
            return await self._client.post(url, content=body,
                                           headers={"content-type": content_type})
        except httpx.HTTPError as exc:
            # named by the anchor's label: the URL may carry credentials
            raise AnchorError(f"{self.state.name}: {type(exc).__name__}") from None


class WitnessAnchor(_HttpAnchor):
    def __init__(self, spec: AnchorSpec) -> None:
        super().__init__(spec)
        url = str(spec.url).rstrip("/")
        self.url = url if url.endswith("/add-checkpoint") else url + "/add-checkpoint"
        self.cosigned = 0  # the size it last cosigned, as far as this gateway knows
        self.key = None if spec.key is None else CosignatureVerifier.parse(spec.key)

    def restore(self, kept: dict[str, Any]) -> None:
        self.cosigned = int(kept.get("cosigned", 0))

    async def deliver(self, size: int, note: str, proof_for: ProofFor) -> dict[str, Any]:
        for _ in range(2):  # a 409 tells the size it holds: once more from there
            old = self.cosigned if self.cosigned <= size else 0
            proof = proof_for(old, size)
            lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
            body = ("\n".join(lines) + "\n\n" + note).encode()
            response = await self._post(self.url, body, "text/plain; charset=utf-8")
            if response.status_code == 409 and response.headers.get(
                    "content-type", "").startswith("text/x.tlog.size"):
                try:
                    held = int(response.text.strip())
                except ValueError:
                    raise AnchorError("the witness answered 409 without a size") from None
                if held == old or held > size:
                    raise AnchorError(f"the witness holds size {held}, which this log cannot "
                                      f"extend to {size}")
                self.cosigned = held
                continue
            if response.status_code != 200:
                raise AnchorError(f"the witness answered {response.status_code}: "
                                  f"{response.text.strip()[:200]}")
            cosignatures = [line for line in response.text.split("\n") if line]
            if not cosignatures or not all(line.startswith(DASH) for line in cosignatures):
                raise AnchorError("the witness answered 200 without cosignature lines")
            if self.key is not None:
                try:
                    stamp = self.key.cosigned(note + "".join(c + "\n" for c in cosignatures))
                except NoteError as exc:
                    raise AnchorError(str(exc)) from None
                if stamp is None:
                    raise AnchorError(f"the witness answered without a cosignature of "
                                      f"{self.key.name}")
            self.cosigned = size
            return {"cosigned": size, "cosignatures": cosignatures}
        raise AnchorError("the witness kept answering 409")


class TimestampAnchor(_HttpAnchor):
    async def deliver(self, size: int, note: str, proof_for: ProofFor) -> dict[str, Any]:
        from rfc3161_client import PKIStatus, TimestampRequestBuilder, decode_timestamp_response

        request = TimestampRequestBuilder(data=note.encode(), nonce=True, cert_req=True).build()
        response = await self._post(str(self.spec.url), request.as_bytes(),
                                    "application/timestamp-query")
        if response.status_code != 200:
            raise AnchorError(f"the timestamp authority answered {response.status_code}")
        try:
            answer = decode_timestamp_response(response.content)
        except ValueError as exc:
            raise AnchorError(f"the timestamp authority's answer is not a timestamp: {exc}") \
                from None
        if answer.status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
            raise AnchorError(f"the timestamp authority refused: {answer.status_string}")
        if answer.tst_info.nonce != request.nonce:
            raise AnchorError("the timestamp answers another request (nonce)")
        digest = hashlib.sha256(note.encode()).digest()
        if answer.tst_info.message_imprint.message != digest:
            raise AnchorError("the timestamp is over something else (message imprint)")
        return {"token": base64.b64encode(answer.time_stamp_token()).decode(),
                "time": iso(answer.tst_info.gen_time)}


def anchor_for(spec: AnchorSpec) -> Anchor:
    kinds: dict[str, type[Anchor]] = {"file": FileAnchor, "witness": WitnessAnchor,
                                      "rfc3161": TimestampAnchor}
    return kinds[spec.kind](spec)

"""An upstream that ignores ``Accept-Encoding: identity`` and compresses its answer
anyway: the credential it echoes inside gzip or deflate is still found and replaced
(the agent gets the answer decoded, without ``Content-Encoding``); an encoding the
gateway cannot decode (br, zstd) is refused with 502 ``upstream_encoding``."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.harness import policy_text, serve_app, started_gateway
from tests.proxy.test_echoed_credential import QUERY, RULES, leaked, stored


def squeezed(data: bytes, coding: str) -> list[bytes]:
    """``data`` compressed as ``coding``, in three pieces flushed apart (as a server
    streaming its answer would send them)."""
    packer = (zlib.compressobj(wbits=31) if coding == "gzip"
              else zlib.compressobj(wbits=15) if coding == "deflate"
              else zlib.compressobj(wbits=-15))  # "raw": deflate as some servers send it
    third = max(len(data) // 3, 1)
    pieces = [packer.compress(data[:third]) + packer.flush(zlib.Z_SYNC_FLUSH),
              packer.compress(data[third:2 * third]) + packer.flush(zlib.Z_SYNC_FLUSH),
              packer.compress(data[2 * third:]) + packer.flush()]
    return [piece for piece in pieces if piece]


class Compressing:
    """Echoes its query in the body, as ``Echoing`` does, compressed as ``coding``
    whatever the request asked; streamed in pieces (reads) or whole (the rest)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        q = scope["query_string"].decode()
        body = json.dumps({"id": "x1", "next": f"http://upstream/items?{q}&page=2"}).encode()
        coding = "deflate" if self.coding == "raw" else self.coding
        pieces = (squeezed(body, self.coding) if self.coding in ("gzip", "deflate", "raw")
                  else [b"\x28\xb5\x2f\xfd" + body])  # not what the gateway decodes
        headers = [(b"content-type", b"application/json"), (b"content-encoding", coding.encode())]
        if scope["method"] != "GET":
            headers.append((b"content-length", str(sum(map(len, pieces))).encode()))
        await send({"type": "http.response.start",
                    "status": 201 if scope["method"] == "POST" else 200, "headers": headers})
        for at, piece in enumerate(pieces):
            await send({"type": "http.response.body", "body": piece,
                        "more_body": at < len(pieces) - 1})


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw"])
async def test_an_echo_inside_a_compressed_answer_is_hidden(tmp_path: Path, coding: str) -> None:
    async with serve_app(Compressing(coding)) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=QUERY)}) as gw:
        read = await gw.agent.get("/api/items", params={"page": "1"})  # streamed
        created = await gw.agent.post("/api/items", json={"a": 1})  # whole
        edited = await gw.agent.patch("/api/items/x1", json={"a": 2})  # + its capture
        journal = await gw.admin.get("/v1/journal", headers=gw.as_role("admin"))
        entries = [await gw.admin.get(f"/v1/journal/{e['id']}", headers=gw.as_role("admin"))
                   for e in journal.json()["items"]]
    for response in (read, created, edited):
        assert response.status_code in (200, 201), response.text
        assert leaked(response.text) == [], response.text
        assert "api_key=[REDACTED]&page=2" in response.json()["next"], response.text
        assert "content-encoding" not in response.headers  # what is sent is decoded
    assert int(created.headers["content-length"]) == len(created.content)
    assert len(entries) == 2 and all("[REDACTED]" in e.text for e in entries)
    assert leaked(journal.text + "".join(e.text for e in entries) + stored(tmp_path)) == []


@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_an_answer_the_gateway_cannot_decode_is_refused(tmp_path: Path,
                                                              coding: str) -> None:
    async with serve_app(Compressing(coding)) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=QUERY)}) as gw:
        read = await gw.agent.get("/api/items")
        created = await gw.agent.post("/api/items", json={"a": 1})
        edited = await gw.agent.patch("/api/items/x1", json={"a": 2})
        journal = await gw.admin.get("/v1/journal", headers=gw.as_role("admin"))
    for response in (read, created):
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_encoding", response.text
        assert coding in response.json()["error"]["message"]
    assert edited.status_code == 502 and edited.json()["error"]["code"] == "capture_failed"
    [entry] = journal.json()["items"]  # the POST: sent, its answer unread
    assert entry["state"] == "unknown", entry

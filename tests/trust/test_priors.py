"""Byte-exact priors: text and binary resources come back byte for byte, with their type.

A small file server (the shape of S3 or a file API: ``PUT`` stores the body and its
content type, ``GET`` returns them, ``DELETE`` removes) sits behind the gateway. Each row
writes over (or deletes) a resource whose prior state is not JSON; rollback must restore
the exact bytes and content type. A prior over ``journal_body_limit`` is irreversible
with the reason in the journal and the plan. Both stores; the prior is sealed at rest.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import policy_text, serve_app, started_gateway
from tests.trust.test_secrets import _store_text

KEY = base64.b64encode(b"p" * 32).decode()
RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: files
  match: {methods: [PUT, DELETE], path: "/files/{name}"}
  action: allow
"""


class Files:
    """name -> (content type, bytes); every request is recorded (method, path, body)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.log: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, name = scope["method"], scope["path"].removeprefix("/files/")
        self.log.append((method, scope["path"], body))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, kind, out = 404, "application/json", b'{"error":"no such file"}'
        if method == "GET" and name in self.files:
            (kind, out), status = self.files[name], 200
        elif method == "PUT":
            self.files[name] = (headers.get("content-type", "application/octet-stream"), body)
            status, out = 200, b""
        elif method == "DELETE" and name in self.files:
            del self.files[name]
            status, out = 204, b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind.encode())]})
        await send({"type": "http.response.body", "body": out})


@pytest.fixture
async def files() -> AsyncIterator[tuple[Files, str]]:
    app = Files()
    async with serve_app(app) as url:
        yield app, url


@dataclass(frozen=True)
class Row:
    id: str
    content_type: str
    prior: bytes
    method: str  # what the agent does to it
    new: bytes = b""


BINARY = bytes(range(256)) * 3 + b"\x00\xff\xfe"  # not UTF-8, NULs, every byte value
ROWS = [
    Row("binary overwritten", "image/png", BINARY, "PUT", b"\x89PNG new"),
    Row("text overwritten", "text/plain; charset=utf-8", "héllo\r\nwörld\n".encode(), "PUT",
        b"replaced"),
    Row("csv overwritten", "text/csv", b"a,b\r\n1,2\r\n", "PUT", b"a,b\r\n9,9\r\n"),
    Row("binary deleted", "application/octet-stream", BINARY[::-1], "DELETE"),
    Row("text deleted", "text/markdown", b"# Title\n\nbody  \n", "DELETE"),
]


def _keyed(store_url: str) -> dict[str, Any]:
    return {"journal_key": KEY} if store_url.startswith("postgresql") else {}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_a_text_or_binary_prior_is_restored_byte_for_byte(
        row: Row, tmp_path: Path, store_url: str, files: tuple[Files, str]) -> None:
    app, url = files
    app.files["f1"] = (row.content_type, row.prior)
    text = policy_text(url, RULES, upstream="fs")
    async with started_gateway(tmp_path, store_url, {"fs.yaml": text},
                               **_keyed(store_url)) as gw:
        if row.method == "PUT":
            response = await gw.agent.put("/fs/files/f1", content=row.new,
                                          headers={"content-type": "application/octet-stream",
                                                   "X-Agent-Run": "b"})
        else:
            response = await gw.agent.delete("/fs/files/f1", headers={"X-Agent-Run": "b"})
        assert response.status_code in (200, 204), response.text
        assert app.files.get("f1") != (row.content_type, row.prior)
        [entry] = await gw.journal(run="b")
        assert entry["reversible"] is True and entry["undo"]["method"] == "PUT", entry
        assert entry["undo"]["content_type"] == row.content_type
        plan = (await gw.admin.post("/v1/rollback", json={"run": "b", "dry_run": False},
                                    headers=gw.as_role("admin"))).json()["plan"]
        assert [s["status"] for s in plan["steps"]] == ["applied"], plan
        stored = await _store_text(store_url, Path(store_url.split("///", 1)[-1]).parent)
    assert app.files["f1"] == (row.content_type, row.prior)  # the bytes and their type
    if len(row.prior) > 16:
        assert row.prior.decode("latin-1") not in stored  # sealed, not kept readable


async def test_a_changed_resource_is_a_conflict_by_its_digest(
        tmp_path: Path, store_url: str, files: tuple[Files, str]) -> None:
    app, url = files
    app.files["f1"] = ("image/png", BINARY)
    text = policy_text(url, RULES, upstream="fs")
    async with started_gateway(tmp_path, store_url, {"fs.yaml": text},
                               **_keyed(store_url)) as gw:
        await gw.agent.put("/fs/files/f1", content=b"agent", headers={"X-Agent-Run": "c"})
        app.files["f1"] = ("image/png", b"someone else")
        plan = (await gw.admin.post("/v1/rollback", json={"run": "c", "dry_run": False},
                                    headers=gw.as_role("admin"))).json()["plan"]
    [step] = plan["steps"]
    assert step["status"] == "conflict" and "sha256" in step["detail"], step
    assert app.files["f1"] == ("image/png", b"someone else")  # left alone


async def test_a_prior_over_the_limit_is_irreversible_with_the_reason(
        tmp_path: Path, store_url: str, files: tuple[Files, str]) -> None:
    app, url = files
    big = os.urandom(4096)
    app.files["big"] = ("application/octet-stream", big)
    text = policy_text(url, RULES, upstream="fs")
    async with started_gateway(tmp_path, store_url, {"fs.yaml": text}, journal_body_limit=1024,
                               **_keyed(store_url)) as gw:
        response = await gw.agent.put("/fs/files/big", content=b"small",
                                      headers={"X-Agent-Run": "o"})
        assert response.status_code == 200
        [entry] = await gw.journal(run="o")
        plan = (await gw.admin.post("/v1/rollback", json={"run": "o"},
                                    headers=gw.as_role("admin"))).json()["plan"]
    assert entry["reversible"] is False and entry["undo"] is None
    assert "4096 bytes" in entry["irreversible_reason"]
    assert "over journal_body_limit (1024)" in entry["irreversible_reason"]
    assert plan["steps"] == []
    [item] = plan["irreversible"]
    assert item["reason"] == entry["irreversible_reason"]

"""``rewrite_urls``: the upstream's own absolute URLs in answers point at the gateway.

A real upstream (uvicorn on port 0) answers with its base URL in ``Location``,
``Link`` and ``Content-Location``, in a JSON body (plain and with JSON's
escaped slashes) and in a text body; the agent must see
``{public_url}/{upstream}`` everywhere, and nothing else changed. Without
``rewrite_urls`` (or without ``public_url``) the answer is passed on as is.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import policy_text, serve_app, started_gateway

RULES = """
- id: all
  match: {path: "/**"}
  action: allow
  capture: false
"""
PUBLIC = "https://gateway.example:8443"


class Linking:
    """Answers every request with links to itself."""

    url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        base = self.url
        if scope["path"].endswith(".txt"):
            kind, body = b"text/plain", f"see {base}/docs/a and {base}9/not-ours\n".encode()
        else:
            kind = b"application/json"
            body = json.dumps({"url": f"{base}/repos/o/r", "escaped": f"{base}/x".replace(
                "/", "\\/"), "other": "http://elsewhere.example/repos", "n": 1},
                separators=(",", ":")).encode().replace(b"\\\\/", b"\\/")
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", kind), (b"content-length", str(len(body)).encode()),
            (b"location", f"{base}/repos/o/r/issues/2".encode()),
            (b"link", f'<{base}/repos?page=2>; rel="next", <{base}/repos?page=9>; rel="last"'
             .encode()),
            (b"content-location", f"{base}/repos/o/r".encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def linking() -> AsyncIterator[Linking]:
    app = Linking()
    async with serve_app(app) as url:
        app.url = url
        yield app


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_urls_in_headers_and_bodies_point_at_the_gateway(
        tmp_path: Path, linking: Linking, method: str) -> None:
    text = policy_text(linking.url, RULES, upstream="gh", extra="rewrite_urls: true\n")
    (tmp_path / "db").mkdir()
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'g.db'}",
                               {"gh.yaml": text}, public_url=PUBLIC) as gw:
        response = await gw.agent.request(method, "/gh/repos/o/r", json={} if method == "POST"
                                          else None)
        mine = f"{PUBLIC}/gh"
        assert response.status_code == 201
        assert response.headers["location"] == f"{mine}/repos/o/r/issues/2"
        assert response.headers["link"] == (f'<{mine}/repos?page=2>; rel="next", '
                                            f'<{mine}/repos?page=9>; rel="last"')
        assert response.headers["content-location"] == f"{mine}/repos/o/r"
        assert response.json() == {"url": f"{mine}/repos/o/r", "escaped": f"{mine}/x",
                                   "other": "http://elsewhere.example/repos", "n": 1}
        assert int(response.headers["content-length"]) == len(response.content)
        assert b"\\/" in response.content  # escaped where it was escaped

        plain = await gw.agent.get("/gh/notes.txt")
        assert plain.text == f"see {mine}/docs/a and {linking.url}9/not-ours\n"


@pytest.mark.parametrize(("extra", "public_url"), [
    ("", PUBLIC),                         # the policy does not ask for it
    ("rewrite_urls: true\n", None),       # no public_url setting: nothing to point at
])
async def test_without_rewrite_urls_or_public_url_answers_pass_as_they_are(
        tmp_path: Path, linking: Linking, extra: str, public_url: str | None) -> None:
    text = policy_text(linking.url, RULES, upstream="gh", extra=extra)
    (tmp_path / "db").mkdir()
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'g.db'}",
                               {"gh.yaml": text}, public_url=public_url) as gw:
        response = await gw.agent.get("/gh/repos/o/r")
        assert response.headers["location"] == f"{linking.url}/repos/o/r/issues/2"
        assert response.json()["url"] == f"{linking.url}/repos/o/r"


async def test_urls_of_another_origin_are_named_in_a_warning(tmp_path: Path,
                                                             linking: Linking) -> None:
    """PyGithub asserts that followed URLs have its host and fails with a bare
    ``AssertionError: api.github.com`` when the upstream names itself otherwise."""
    text = policy_text(linking.url, RULES, upstream="gh", extra="rewrite_urls: true\n")
    linking.url = "http://127.0.0.1:9"  # the upstream names itself by another address
    (tmp_path / "db").mkdir()
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'g.db'}",
                               {"gh.yaml": text}, public_url=PUBLIC) as gw:
        response = await gw.agent.get("/gh/repos/o/r")
        warning = response.headers["warning"]
        assert "the upstream's URLs name http://127.0.0.1:9, not base_url" in warning
        assert response.json()["url"] == "http://127.0.0.1:9/repos/o/r"  # not rewritten
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db' / 'h.db'}",
                               {"gh.yaml": text}, public_url=None) as gw:
        response = await gw.agent.get("/gh/repos/o/r")
        assert "has no public_url" in response.headers["warning"]

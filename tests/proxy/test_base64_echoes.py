"""The credential echoed in other spellings: base64 (standard or URL-safe, at any offset
inside a larger encoded value, as a reflected ``Authorization: Basic`` or a request
echoed base64-encoded would carry it), and a Basic credential's password decoded
(``user:password``, or the password alone, as httpbin's ``/basic-auth`` answers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import policy_text, serve_app, started_gateway
from tests.proxy.test_echoed_credential import RULES, stored

TOKEN = "b64credcanary90"
PASSWORD = "basicpwcanary12"
HEADER = f'credentials: {{header: Authorization, value: "Bearer {TOKEN}"}}\n'
BASIC = f'credentials: {{basic: {{username: svc, password: "{PASSWORD}"}}}}\n'


class Decoding:
    """Echoes what it was sent as an upstream might: the Authorization header decoded
    (Basic) and re-encoded, and the whole request base64-encoded at every offset."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        authorization = dict(scope["headers"])[b"authorization"].decode()
        scheme, _, value = authorization.partition(" ")
        secret = base64.b64decode(value).decode() if scheme == "Basic" else value
        user, _, password = secret.rpartition(":")
        body = json.dumps({
            "user": user, "password": password, "pair": secret,  # decoded
            "as_basic": base64.b64encode(f"{secret}:".encode()).decode(),
            "as_user": base64.b64encode(f"me:{password or secret}".encode()).decode(),
            "request": [base64.b64encode(b"x" * at + authorization.encode()).decode()
                        for at in range(3)],
            "url_safe": [base64.urlsafe_b64encode(b"~~" * at + secret.encode() + b"?>")
                         .decode() for at in range(3)]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


def spellings(secret: str) -> list[str]:
    """``secret`` as the upstream may show it, for the assertions: plain and each base64
    stretch the test's encodings produce (checked by decoding, not by the gateway's
    own list)."""
    return [secret, base64.b64encode(secret.encode()).decode()[:8],
            base64.b64encode(f"me:{secret}".encode()).decode()[4:12]]


def shows(text: str, secret: str) -> bool:
    """Whether any base64 value in the answer still decodes to a text holding ``secret``."""
    if secret in text:
        return True
    values = json.loads(text)
    found = [values[k] for k in ("as_basic", "as_user")] + values["request"] + values["url_safe"]
    for value in found:
        raw = value.replace("-", "+").replace("_", "/")
        try:
            decoded = base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("latin-1")
        except ValueError:
            continue  # replaced in: no longer base64
        if secret in decoded:
            return True
    return False


@pytest.mark.parametrize(("credential", "secret"), [(HEADER, TOKEN), (BASIC, PASSWORD)])
async def test_base64_and_decoded_echoes_are_hidden(tmp_path: Path, credential: str,
                                                    secret: str) -> None:
    read, written, journal, shown = await read_and_write(Decoding(), tmp_path, credential)
    for response in (read, written):
        assert response.status_code == 200, response.text
        assert not shows(response.text, secret), response.text
        assert response.json()["password"] == "[REDACTED]" or secret == TOKEN
    assert "[REDACTED]" in shown.text
    everything = journal.text + shown.text + stored(tmp_path)
    assert [s for s in spellings(secret) if s in everything] == []


async def read_and_write(upstream: Any, tmp_path: Path, credential: str) -> tuple[
        httpx.Response, httpx.Response, httpx.Response, httpx.Response]:
    """Through a gateway whose policy holds ``credential`` for ``upstream``: a read, a
    write, then the journal's list and the write's entry as an admin reads them."""
    async with serve_app(upstream) as url, started_gateway(
            tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
            {"api.yaml": policy_text(url, RULES, upstream="api", extra=credential)}) as gw:
        read = await gw.agent.get("/api/items")
        written = await gw.agent.patch("/api/items/x1", json={"a": 1})
        journal = await gw.admin.get("/v1/journal", headers=gw.as_role("admin"))
        [entry] = journal.json()["items"]
        shown = await gw.admin.get(f"/v1/journal/{entry['id']}", headers=gw.as_role("admin"))
    return read, written, journal, shown

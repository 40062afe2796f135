"""The credential echoed as markup or script-safe JSON would spell it: an HTML or XML
page escaping ``& < > " '`` (``&amp;``, ``&#x27;``, ``&#39;``, ``&apos;``, ``&#34;``,
``&#x2F;``...), and JSON as Go's encoder writes it by default (``\\u0026``,
``\\u003c``, ``\\u003e``). A credential with those characters (a password, a token
some issuers mint) echoed so reached the agent unreplaced."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tests.proxy.test_base64_echoes import read_and_write
from tests.proxy.test_echoed_credential import stored

TOKEN = """mk&<up>"ca'na/ry42"""
HEADER = "credentials: {header: Authorization, value: 'Bearer " + TOKEN.replace("'", "''") \
    + "'}\n"


def markup_spellings(secret: str) -> dict[str, str]:
    """``secret`` as escapers of several stacks write it (checked here one by one, not
    with the gateway's own list)."""
    go = json.dumps(secret)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c") \
        .replace(">", "\\u003e")
    return {
        "python html.escape": html.escape(secret),  # &#x27; for '
        "markupsafe / jinja": html.escape(secret).replace("&#x27;", "&#39;")
        .replace("&quot;", "&#34;"),
        "xml": html.escape(secret).replace("&#x27;", "&apos;"),
        "owasp (slash too)": html.escape(secret).replace("/", "&#x2F;"),
        "only quotes kept": html.escape(secret, quote=False),  # text nodes
        "go json": go,
    }


class Markup:
    """Answers with the bearer token in every spelling above, HTML and JSON alike."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        token = dict(scope["headers"])[b"authorization"].decode().partition(" ")[2]
        spelt = markup_spellings(token)
        body = ("<html><body>" + "".join(f'<input name="{name}" value="{value}">'
                                         for name, value in spelt.items())
                + "<script>var cfg = {" + f'"token": "{spelt["go json"]}"' + "}</script>"
                + "</body></html>")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": body.encode()})


async def test_markup_and_script_safe_json_echoes_are_hidden(tmp_path: Path) -> None:
    read, written, journal, shown = await read_and_write(Markup(), tmp_path, HEADER)
    spellings = markup_spellings(TOKEN)
    assert len(set(spellings.values())) == len(spellings)  # six different spellings
    for response in (read, written):
        assert response.status_code == 200, response.text
        assert response.text.count("[REDACTED]") == len(spellings) + 1, response.text
        assert [n for n, s in spellings.items() if s in response.text] == [], response.text
    everything = journal.text + shown.text + stored(tmp_path)
    assert [n for n, s in spellings.items() if s in everything] == []

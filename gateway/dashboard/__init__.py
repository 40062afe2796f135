"""The operators' dashboard: one self-contained HTML page (inline CSS and JS, no build step).

``load()`` reads it once from the package and derives the security headers it is
served with. The Content-Security-Policy allows exactly the page's own inline
``<script>`` and ``<style>`` blocks (by their sha256), ``fetch`` to the same
origin, and nothing else: no other script, no framing, no form submission.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Dashboard:
    html: str
    headers: dict[str, str]


def _hashes(html: str, tag: str) -> str:
    blocks = [body for kind, body in _INLINE.findall(html) if kind == tag]
    return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
                    for b in blocks)


def load() -> Dashboard:
    html = resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8")
    policy = "; ".join([
        "default-src 'none'",
        f"script-src {_hashes(html, 'script')}",
        f"style-src {_hashes(html, 'style')}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return Dashboard(html, {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    })

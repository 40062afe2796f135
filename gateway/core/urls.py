"""Upstream URLs in responses, pointed back at the gateway (``rewrite_urls: true``).

APIs answer with absolute URLs of their own (GitHub's ``url`` fields, ``Link``
pagination, ``Location``); an SDK that follows them would leave the gateway.
With ``rewrite_urls`` and the ``public_url`` setting, every occurrence of the
upstream's ``base_url`` in ``Location``, ``Link`` and ``Content-Location``
headers and in JSON and text bodies becomes ``{public_url}/{upstream}``. A
match must end at a URL boundary, so ``http://h:300`` never rewrites
``http://h:3000``; JSON's escaped form (``http:\\/\\/h``) is rewritten too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.core.body import media_type

URL_HEADERS = frozenset({"location", "link", "content-location"})
_END = r"(?=[/?#\"'\s<>;,\\]|$)"


def target(public_url: str, upstream: str) -> str:
    return f"{public_url.rstrip('/')}/{upstream}"


def _pattern(base_url: str) -> re.Pattern[str]:
    base = base_url.rstrip("/")
    escaped = base.replace("/", "\\/")
    return re.compile(f"({re.escape(base)}|{re.escape(escaped)}){_END}")


def rewrite_text(text: str, base_url: str, public: str) -> str:
    """``text`` with ``base_url`` replaced by ``public`` (escaped where it was escaped).

    >>> rewrite_text('{"url":"https://api.x/repos/a"}', "https://api.x", "http://gw/gh")
    '{"url":"http://gw/gh/repos/a"}'
    """
    escaped_public = public.replace("/", "\\/")

    def swap(match: re.Match[str]) -> str:
        return escaped_public if "\\/" in match.group(1) else public

    return _pattern(base_url).sub(swap, text)


def rewrite_headers(headers: Iterable[tuple[str, str]], base_url: str,
                    public: str) -> list[tuple[str, str]]:
    return [(k, rewrite_text(v, base_url, public) if k.lower() in URL_HEADERS else v)
            for k, v in headers]


def rewritable(headers: Iterable[tuple[str, str]]) -> bool:
    """A JSON or text body that is not compressed."""
    kind, encoding = "", ""
    for name, value in headers:
        low = name.lower()
        if low == "content-type":
            kind = media_type(value)
        elif low == "content-encoding":
            encoding = value.strip().lower()
    if encoding not in ("", "identity"):
        return False
    return kind.startswith("text/") or kind == "application/json" or kind.endswith("+json")


def rewrite_body(body: bytes, base_url: str, public: str) -> bytes:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    return rewrite_text(text, base_url, public).encode("utf-8")


_URL_FIELD = re.compile(r'"url"\s*:\s*"(https?:(?://|\\/\\/)[^/"\\?#]+)')


def foreign_origin(text: str, base_url: str) -> str | None:
    """The origin of a ``"url"`` field (the API naming its own resources, as GitHub
    does) that is not ``base_url``'s; such URLs are not rewritten, and an SDK that
    follows them leaves the gateway or refuses them (PyGithub: ``AssertionError``).

    >>> foreign_origin('{"url": "https://ghe.corp/api/v3/repos/a"}', "https://api.github.com")
    'https://ghe.corp'
    >>> foreign_origin('{"url": "https://api.github.com/repos/a"}', "https://api.github.com")
    """
    parts = base_url.split("/", 3)
    base = "/".join(parts[:3]).lower()
    for match in _URL_FIELD.finditer(text):
        found = match.group(1).replace("\\/", "/")
        if found.lower() != base:
            return found
    return None

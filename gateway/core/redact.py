"""Secrets never reach the store or the logs.

Headers that carry credentials, and body or query fields named like secrets,
are replaced by ``[REDACTED]`` before a journal entry or a held call is
written. Matching is by name, so it errs on the side of hiding.

>>> redact_headers({"Authorization": "Bearer x", "Accept": "*/*"})
{'authorization': '[REDACTED]', 'accept': '*/*'}
>>> redact_json({"user": "ada", "password": "hunter2", "nested": [{"api_key": "k"}]})
{'user': 'ada', 'password': '[REDACTED]', 'nested': [{'api_key': '[REDACTED]'}]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

from gateway.core.body import FORM, media_type

REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "x-gateway-key", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
})
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|^auth$|authorization|credential"
    r"|private[-_]?key"
    r"|session|cookie|signature|^cvc$|^cvv$|card[-_]?number|^pin$|^ssn$",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)  # every journaled body and header asks, mostly the same few names
def is_secret_name(name: str) -> bool:
    """By name; each part of a bracketed form key counts (``card[cvc]``)."""
    if name.lower() in SECRET_HEADERS or _SECRET_NAME.search(name):
        return True
    if "[" not in name and "]" not in name:
        return False
    parts = [p for p in re.split(r"[\[\]]", name) if p]
    return len(parts) > 1 and any(_SECRET_NAME.search(p) for p in parts)


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = REDACTED if is_secret_name(key) else value
    return out


_NESTED = (dict, list)


def redact_json(value: Any) -> Any:
    # Leaves are not recursed into (most of a body is leaves): every write redacts
    # several bodies.
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_name(k)
                    else redact_json(v) if isinstance(v, _NESTED) else v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) if isinstance(v, _NESTED) else v for v in value]
    return value


def hides(value: Any) -> bool:
    """Whether ``redact_json(value) != value``, without building the redacted copy."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and is_secret_name(k):
                if v != REDACTED:
                    return True
            elif isinstance(v, _NESTED) and hides(v):
                return True
        return False
    if isinstance(value, list):
        return any(hides(v) for v in value if isinstance(v, _NESTED))
    return False


_PAIR = re.compile(r"""([A-Za-z0-9_.\[\]-]+)(["']?\s*[:=]\s*["']?)([^\s"'&,;]+)""")


def redact_text(text: str) -> str:
    """Free text as journaled: JSON in it redacted by name, else each ``name=value`` or
    ``name: value`` whose name is a secret's.

    >>> redact_text('{"id": 1, "api_key": "k"}'), redact_text("ok, token=abc")
    ('{"id": 1, "api_key": "[REDACTED]"}', 'ok, token=[REDACTED]')
    """
    try:
        parsed = json.loads(text)
    except ValueError:
        return _PAIR.sub(lambda m: m.group(0) if not is_secret_name(m.group(1))
                         else m.group(1) + m.group(2) + REDACTED, text)
    if not isinstance(parsed, (dict, list)):
        return text
    redacted = redact_json(parsed)
    return text if redacted == parsed else json.dumps(redacted, ensure_ascii=False)


def redact_form(text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    return urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs])


def redact_query(query: str) -> str:
    return redact_form(query) if query else query


def redacted_body(body: bytes, content_type: str | None) -> bytes:
    """A request body as views may show it: JSON and form fields redacted by name, other
    text as the journal redacts it (``redact_text``: each secret-named ``name=value``);
    a body declared binary is dropped, one not declared and not UTF-8 kept as it is.

    >>> redacted_body(b"user=ada password=hunter2", "text/plain")
    b'user=ada password=[REDACTED]'
    """
    if not body:
        return body
    kind = media_type(content_type)
    if kind == FORM:
        return redact_form(body.decode("utf-8", "replace")).encode()
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if kind and not kind.startswith("text/"):
            return b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return body
        shown = redact_text(text)
        return body if shown == text else shown.encode()
    return json.dumps(redact_json(parsed), ensure_ascii=False, separators=(",", ":")).encode()


def carries_secrets(query: str, headers: Iterable[tuple[str, str]], body: bytes,
                    content_type: str | None) -> bool:
    """Whether a request has anything views redact: a secret-named header, query
    parameter, form or JSON field, or a secret-named word in a text body. (A binary
    body is not shown in views, but it is not a secret by name either.)

    >>> carries_secrets("plan=pro", [], b'{"plan": "pro"}', "application/json")
    False
    >>> carries_secrets("", [], b"password=hunter2", "application/x-www-form-urlencoded")
    True
    """
    if _secret_field(query) or any(is_secret_name(name) for name, _ in headers):
        return True
    if not body:
        return False
    kind = media_type(content_type)
    if kind == FORM:
        return _secret_field(body.decode("utf-8", "replace"))
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if kind and not kind.startswith("text/"):
            return False
        return redacted_body(body, content_type) != body
    return bool(redact_json(parsed) != parsed)


def _secret_field(form: str) -> bool:
    return any(is_secret_name(name) for name, _ in parse_qsl(form, keep_blank_values=True))

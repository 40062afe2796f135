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

import base64
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import product
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode

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


def secret_values(value: Any) -> frozenset[str]:
    """The values of ``value``'s secret-named fields, at any depth (strings and numbers):
    what a text quoting them (a tool's error repeating its arguments) must not show.

    >>> sorted(secret_values({"id": 7, "auth": {"token": "t0k", "pin": 1234}}))
    ['1234', 't0k']
    """
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) \
                    and isinstance(item, (str, int, float)) and not isinstance(item, bool):
                found.add(str(item))
            elif isinstance(item, _NESTED):
                found |= secret_values(item)
    elif isinstance(value, list):
        for item in value:
            found |= secret_values(item)
    found.discard("")
    found.discard(REDACTED)
    return frozenset(found)


def redact_quoted(text: str, secrets: Iterable[str] = ()) -> str:
    """Text an upstream wrote, quoted into an error or the journal: redacted by name
    (``redact_text``), and each of ``secrets`` (``secret_values`` of what it was sent)
    replaced wherever it appears, named or not.

    >>> redact_quoted("no user for hunter2; api_key=k", ["hunter2"])
    'no user for [REDACTED]; api_key=[REDACTED]'
    """
    return replace_values(redact_text(text), secrets)


def replace_values(text: str, secrets: Iterable[str]) -> str:
    """Each of ``secrets`` replaced wherever it appears in ``text``, the longest first
    (one that holds another is not left half shown)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


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


# -- an injected credential echoed back ---------------------------------------------------
#
# The gateway injects the upstream's credential (a header, a query parameter), so the
# agent never holds it. An upstream that echoes the request (a ``Location`` or ``Link``
# with the query, a ``"next"`` pagination URL, a reflected header) would hand it back:
# there a name does not say it is a secret, the value does. ``Echoes`` replaces every
# occurrence of the values, as sent and as commonly re-encoded, in what the upstream
# answers, before anything else (agent, journal, held calls, errors) reads it.


# A value shorter than this is not replaced: one or a few characters occur everywhere by
# chance ("ab" in "table"), so replacing them would garble every answer and the priors
# rollback writes back. No real credential is this short; ``policy check`` warns of one.
MIN_ECHO = 4


def echo_forms(secret: str) -> list[str]:
    """The spellings an upstream may echo ``secret`` in: as sent, percent-encoded (either
    case of hex digits, ``+`` for spaces), JSON-escaped (also as Go writes ``& < >``),
    and escaped as markup (``markup_forms``).

    >>> echo_forms("a/b c")[:7]
    ['a/b c', 'a%2Fb%20c', 'a%2fb%20c', 'a%2Fb+c', 'a%2fb+c', 'a/b%20c', 'a\\\\/b c']
    >>> echo_forms("a/b c")[7:]
    ['a&#x2F;b c', 'a&#x2f;b c', 'a&#47;b c']
    """
    forms: list[str] = []
    escaped = [json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]]
    for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""),
                 quote(secret, safe="/"), *escaped, *(e.translate(_GO_JSON) for e in escaped),
                 secret.replace("/", "\\/"), *markup_forms(secret)):
        for spelt in (form, _lower_hex(form)):
            if spelt and spelt not in forms:
                forms.append(spelt)
    return forms


# JSON as Go's encoding/json writes it by default (HTML-safe): & < > as \\u escapes
_GO_JSON = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"})
# each character markup escapes, and the spellings escapers of common stacks give it
# (Python's html.escape, MarkupSafe/Jinja, XML, OWASP's encoder; kept as is where some
# leave it: quotes in text, ``/`` everywhere but OWASP's)
_MARKUP = {"&": ("&amp;",), "<": ("&lt;",), ">": ("&gt;",),
           '"': ('"', "&quot;", "&#34;", "&#x22;"), "'": ("'", "&#x27;", "&#39;", "&apos;"),
           "/": ("/", "&#x2F;", "&#x2f;", "&#47;")}


def markup_forms(secret: str) -> list[str]:
    """``secret`` as an HTML or XML page escapes it, each kind of character spelt one way
    throughout (as one escaper does); none when it has no such character.

    >>> markup_forms("a<b/c")
    ['a&lt;b/c', 'a&lt;b&#x2F;c', 'a&lt;b&#x2f;c', 'a&lt;b&#47;c']
    """
    present = [c for c in _MARKUP if c in secret]
    if not present:
        return []
    forms = []
    for choices in product(*(_MARKUP[c] for c in present)):
        table: dict[str, str | int | None] = dict(zip(present, choices, strict=True))
        spelt = secret.translate(str.maketrans(table))
        if spelt != secret:
            forms.append(spelt)
    return forms


# Base64 spellings only for values this long: their shortest stretch (9 characters) does
# not occur by chance in encoded data (images, blobs) the way a 4-character one would.
MIN_BASE64 = 8
_URL_SAFE = str.maketrans("+/", "-_")


def base64_forms(secret: str) -> list[str]:
    """The base64 (standard and URL-safe) that ``secret`` becomes inside encoded data
    (a reflected ``Authorization: Basic``, a request echoed base64-encoded): encoded
    alone, and at each of the three byte offsets the characters only its own bytes
    decide, wherever it sits.

    >>> base64_forms("hunter22")
    ['aHVudGVyMjI=', 'aHVudGVyMj', 'h1bnRlcjIy', 'odW50ZXIyM']
    """
    raw = secret.encode("utf-8")
    forms = [base64.b64encode(raw).decode()]
    for lead in range(3):  # the bytes before it in the encoded value, modulo 3
        encoded = base64.b64encode(b"\0" * lead + raw).decode()
        # character i holds bits [6i, 6i+6) of the encoded bytes
        forms.append(encoded[-(-8 * lead // 6):8 * (lead + len(raw)) // 6])
    out: list[str] = []
    for form in forms:
        for spelt in (form, form.translate(_URL_SAFE)):
            if spelt not in out:
                out.append(spelt)
    return out


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


class Echoes:
    """The credential's values wherever an upstream puts them, replaced by ``[REDACTED]``.

    >>> echoes = Echoes(["s3cr/t"])
    >>> echoes.text("/items?api_key=s3cr%2Ft&page=2"), echoes.body(b'{"k": "s3cr\\\\/t"}')
    ('/items?api_key=[REDACTED]&page=2', b'{"k": "[REDACTED]"}')
    """

    __slots__ = ("_bytes", "_text", "_forms", "_firsts", "longest")

    def __init__(self, secrets: Iterable[str]) -> None:
        texts: set[str] = set()
        raw: set[bytes] = set()
        for secret in secrets:
            if len(secret) < MIN_ECHO:
                continue  # (see MIN_ECHO)
            forms = echo_forms(secret)
            if len(secret) >= MIN_BASE64:
                forms += base64_forms(secret)
            for form in forms:
                texts.add(form)
                encoded = form.encode("utf-8")
                raw.add(encoded)
                texts.add(encoded.decode("latin-1"))  # a header value read as latin-1
        if not raw:
            raise ValueError(f"Echoes needs a secret of at least {MIN_ECHO} characters")
        by_length = sorted(raw, key=lambda f: (-len(f), f))  # the longest spelling first
        self._forms = tuple(by_length)
        self._firsts = frozenset(form[0] for form in by_length)
        self._bytes = re.compile(b"|".join(re.escape(f) for f in by_length))
        self._text = re.compile("|".join(re.escape(f) for f in sorted(
            texts, key=lambda f: (-len(f), f))))
        self.longest = len(by_length[0])

    def text(self, text: str) -> str:
        return self._text.sub(REDACTED, text)

    def body(self, data: bytes) -> bytes:
        return self._bytes.sub(_REDACTED_BYTES, data)

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(name, self.text(value)) for name, value in headers]

    def value(self, value: Any) -> Any:
        """A parsed JSON value (an MCP tool's answer) with every string, key or not,
        replaced in."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def stream(self) -> EchoStream:
        return EchoStream(self)

    def held_back(self, data: bytes) -> int:
        """How many of ``data``'s last bytes could begin a spelling (at most longest-1)."""
        for at in range(max(len(data) - self.longest + 1, 0), len(data)):
            if data[at] in self._firsts:  # the longest such tail first
                tail = data[at:]
                if any(form.startswith(tail) for form in self._forms if len(form) > len(tail)):
                    return len(tail)
        return 0

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``data`` replaced up to where a spelling may still be arriving, and that rest."""
        cut = len(data) - self.held_back(data)
        out, pos = [], 0
        for match in self._bytes.finditer(data):
            if match.start() >= cut:
                break
            out.append(data[pos:match.start()])
            out.append(_REDACTED_BYTES)
            pos = match.end()
        end = max(cut, pos)
        out.append(data[pos:end])
        return b"".join(out), data[end:]


_REDACTED_BYTES = REDACTED.encode()


class EchoStream:
    """A body read chunk by chunk: a spelling split across chunks is replaced too. Only
    bytes that could begin one (fewer than the longest spelling) wait for the next chunk,
    so a stream (SSE) is not held back otherwise.

    >>> stream = Echoes(["secret"]).stream()
    >>> stream.feed(b"data: key=sec"), stream.feed(b"ret\\n\\n"), stream.end()
    (b'data: key=', b'[REDACTED]\\n\\n', b'')
    """

    __slots__ = ("_echoes", "_carry")

    def __init__(self, echoes: Echoes) -> None:
        self._echoes = echoes
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        out, self._carry = self._echoes.split(self._carry + chunk)
        return out

    def end(self) -> bytes:
        rest, self._carry = self._carry, b""
        return self._echoes.body(rest)

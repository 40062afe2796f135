"""Canonical requests: one reading of a request, computed once (pure).

What the policy judges, what the journal records and what is forwarded must
be the same request; anything an upstream could read another way is refused
(``Ambiguous``, a 400 at the edge). Like Envoy's ``normalize_path`` (RFC 3986
normalisation, escaped slashes rejected), the normalised path is both the one
judged and the one forwarded; unlike it, dot segments and empty segments are
refused rather than merged, since an upstream may not merge them.

- ``target(raw)``: the path after ``/{upstream}``, percent-decoded per segment
  (strict UTF-8) and re-encoded one way (``%34%32`` is sent as ``42``, ``;`` as
  ``%3B``). Encoded controls, invalid UTF-8, bad escapes, encoded ``/`` or
  ``\\``, dot segments, Unicode format characters and segments whose
  compatibility form hides a separator are refused.
- ``fold(segment)``: the key two spellings share when an upstream that ignores
  case (Express, IIS), applies Unicode compatibility (NFKC), strips trailing
  dots and spaces (Windows) or ``;`` parameters (Tomcat, Spring) would serve
  them as one. The path trie refuses a segment that folds to a rule's literal
  without being it (``/ADMIN`` against ``/admin/**``).
- ``method_override(query)``: the ``_method`` parameter a query carries, if any.

Bodies and query strings are read with one reading in ``gateway.core.body``.

>>> target("/customers/%34%32").encoded
'/customers/42'
>>> fold("ＡＤＭＩＮ;v=1."), fold("admin")
('admin', 'admin')
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple
from urllib.parse import parse_qsl, quote

from gateway.errors import Ambiguous

# Characters a segment keeps as they are when forwarded: RFC 3986 unreserved and the
# pchar sub-delims no HTTP server treats specially in a path (``;`` is not among them).
_SAFE = "-._~!$&'()*+,=:@"
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9\-_~!$&'()*+,=:@]"
                         r"(?:[A-Za-z0-9\-_~!$&'()*+,=:@.]*[A-Za-z0-9\-_~!$&'()*+,=:@])?)*/?")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class Target(NamedTuple):
    encoded: str  # what is forwarded after the upstream's base URL ("" for the root)
    decoded: str  # what policies judge and the journal records ("/" for the root)
    segments: tuple[str, ...]


def target(raw: str) -> Target:
    """The canonical form of ``raw`` (percent-encoded, as received, ``""`` or ``/...``).

    Agents repeat paths and the pipeline reads the listener's target back, so short
    paths are cached (bounded: at most 2048 of at most 256 characters).
    """
    return _cached(raw) if len(raw) <= 256 else _target(raw)


def _target(raw: str) -> Target:
    if raw in ("", "/"):
        return Target(raw, "/", ())
    if _PLAIN_PATH.fullmatch(raw):  # the common case: nothing to decode or check
        parts = raw[1:].split("/")
        if parts[-1] == "":
            parts.pop()
        return Target(raw, raw, tuple(parts))
    if not raw.startswith("/"):
        raise Ambiguous("the path must start with '/'")
    parts = raw[1:].split("/")
    trailing = parts[-1] == ""
    if trailing:
        parts.pop()
    segments = tuple(_segment(part) for part in parts)
    encoded = "/" + "/".join(quote(s, safe=_SAFE) for s in segments) + ("/" if trailing else "")
    return Target(encoded, "/" + "/".join(segments) + ("/" if trailing else ""), segments)


_cached = functools.lru_cache(maxsize=2048)(_target)


def _segment(part: str) -> str:
    if part == "":
        raise Ambiguous("empty path segment ('//')")
    if "%" in part:
        chunks = part.split("%")
        data = bytearray(chunks[0].encode("latin-1"))
        for chunk in chunks[1:]:
            if not _ESCAPE.match("%" + chunk[:2]):
                raise Ambiguous(f"bad percent-escape in path segment {part!r}")
            data.append(int(chunk[:2], 16))
            data += chunk[2:].encode("latin-1")
        raw = bytes(data)
    else:
        raw = part.encode("latin-1")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Ambiguous(f"path segment {part!r} is not valid UTF-8") from None
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise Ambiguous(f"path segment {part!r} carries a control or invisible "
                            f"character (U+{ord(char):04X})")
    if text in (".", "..") or "/" in text or "\\" in text:
        raise Ambiguous(f"ambiguous path segment {part!r} (dot segment or encoded separator)")
    compatible = unicodedata.normalize("NFKC", text)
    if compatible.strip(". ") == "" or "/" in compatible or "\\" in compatible:
        raise Ambiguous(f"path segment {part!r} reads as a separator or dot segment "
                        "once normalised")
    return text


def caseless(text: str) -> str:
    """``text`` as an upstream that ignores case reads it: lower case, NFKC, and the
    Turkish i's (dotless ``ı``, dotted ``İ``) as ``i``, as Java's and .NET's
    case-insensitive comparisons take them."""
    if text.isascii():
        return text.lower()
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return key.replace("\u0131", "i").replace("i\u0307", "i")


def fold(segment: str) -> str:
    """The spelling a lenient upstream would serve ``segment`` as (see the module doc)."""
    key = caseless(segment)
    if ";" in key:
        key = key.partition(";")[0]
    if key.endswith((".", " ")):
        key = key.rstrip(". ")
    return key


def method_override(query: str) -> str | None:
    """The ``_method`` query parameter's name as sent, if the query has one."""
    if "method" not in query.lower():
        return None
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name.strip().lower() == "_method":
            return name
    return None


def repeated_header(headers: list[tuple[str, str]]) -> str | None:
    """A header name sent more than once, if any: a ``when`` reads one of its values and
    the upstream may read another (the first, or both joined), so a judged call has one.
    ``_`` counts as ``-``: WSGI and CGI servers read both as one ``HTTP_X_...`` variable.

    >>> repeated_header([("x-amz-target", "A.Delete"), ("accept", "*/*"),
    ...                  ("X_Amz_Target", "A.Describe")])
    'x-amz-target'
    """
    seen: set[str] = set()
    for name, _ in headers:
        low = name.lower().replace("_", "-")
        if low in seen:
            return low
        seen.add(low)
    return None


def respelt_header(headers: list[tuple[str, str]],
                   judged: frozenset[str] | None) -> str | None:
    """A header spelt so that an upstream may read it as a header a ``when`` judges under
    another name, if any. WSGI and CGI servers (and Puma, Rack's) read ``X_Force`` as
    ``X-Force`` (both are ``HTTP_X_FORCE``), while the rule sees ``x_force``, so an
    ``X_Force`` the rule never saw would do what ``X-Force`` is held for. ``judged``:
    the names the rules read (None: not known, so every name with ``_`` is suspect).

    >>> respelt_header([("x_force", "true")], frozenset({"x-force"}))
    'x_force'
    >>> respelt_header([("api-key", "k")], frozenset({"api_key"}))
    'api-key'
    >>> respelt_header([("x_trace", "1"), ("x-force", "no")], frozenset({"x-force"})) is None
    True
    """
    for name, _ in headers:
        low = name.lower()
        if judged is None:
            if "_" in low:
                return low
            continue
        key = low.replace("_", "-")
        if any(other != low and other.replace("_", "-") == key for other in judged):
            return low
    return None

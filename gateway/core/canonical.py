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
- ``json_body(body, content_type)``: a JSON body with one reading, or
  ``Ambiguous``: duplicate keys (after unescaping), keys equal but for case,
  keys with NUL, lone surrogates, nesting deeper than 64, numbers outside the
  float range, non-standard constants (NaN, Infinity), a ``_method`` key and, when a
  ``when`` compares the body, numbers a double does not hold.
- ``fields(text, what)``: a query string or form body with one reading (see there).

>>> target("/customers/%34%32").encoded
'/customers/42'
>>> fold("ＡＤＭＩＮ;v=1."), fold("admin")
('admin', 'admin')
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote

from gateway.errors import Ambiguous

MAX_DEPTH = 64
FORM = "application/x-www-form-urlencoded"
# Characters a segment keeps as they are when forwarded: RFC 3986 unreserved and the
# pchar sub-delims no HTTP server treats specially in a path (``;`` is not among them).
_SAFE = "-._~!$&'()*+,=:@"
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9\-_~!$&'()*+,=:@]"
                         r"(?:[A-Za-z0-9\-_~!$&'()*+,=:@.]*[A-Za-z0-9\-_~!$&'()*+,=:@])?)*/?")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_EXACT_INTS = 2**53  # every integer up to this is a double


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


def _caseless(text: str) -> str:
    """``text`` as an upstream that ignores case reads it: lower case, NFKC, and the
    Turkish i's (dotless ``ı``, dotted ``İ``) as ``i``, as Java's and .NET's
    case-insensitive comparisons take them."""
    if text.isascii():
        return text.lower()
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return key.replace("\u0131", "i").replace("i\u0307", "i")


def fold(segment: str) -> str:
    """The spelling a lenient upstream would serve ``segment`` as (see the module doc)."""
    key = _caseless(segment)
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


def fields(text: str, what: str, aliases: bool = False) -> dict[str, str]:
    """A query string or form body with one reading, as ``{name: value}``; ``Ambiguous``
    when frameworks would read it two ways: a name given twice, also as another case or
    as ``name[]`` (Flask takes the first, PHP the last, Express a list), a ``;``
    separator (some servers split on it), a name with leading or trailing spaces or
    ``+``. With ``aliases``, a lone name a lenient upstream reads as another
    (``Force``, ``force[]``) is also given under that other name, so a rule on
    ``force`` judges it.

    >>> fields("Force=1", "query", aliases=True)
    {'Force': '1', 'force': '1'}
    """
    if ";" in text:
        raise Ambiguous(f"{what}: ';' separates parameters on some servers, not on others")
    out: dict[str, str] = {}
    keys: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name != name.strip():
            raise Ambiguous(f"{what}: parameter {name!r} has leading or trailing spaces")
        key = field_key(name)  # ``a[x]`` and ``a[y]`` are two (nested forms: Stripe's)
        if key in keys:
            raise Ambiguous(f"{what}: parameter {name!r} is given twice (as {keys[key]!r}); "
                            "upstreams disagree on which one counts")
        keys[key] = name
        out[name] = value
    if aliases:  # ``force[x]`` is ``force`` to PHP: judged as such
        for name in keys.values():
            out.setdefault(field_key(name, nested=True), out[name])
    return out


def field_key(name: str, nested: bool = False) -> str:
    """The parameter a lenient framework reads ``name`` (decoded) as: ``Api_Key`` and
    ``api_key[]`` are ``api_key``; with ``nested``, ``api_key[x]`` too."""
    if name.endswith("]"):
        name = name.partition("[")[0] if nested else name.removesuffix("[]")
    return _caseless(name)


def form_override(fields: Any) -> bool:
    """True when a parsed form body carries ``_method`` (Rails, Laravel, Symfony)."""
    return isinstance(fields, dict) and any(k.strip().lower() == "_method" for k in fields)


# --- JSON ---------------------------------------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    folded: set[str] = set()
    for key, value in pairs:
        if "\x00" in key:
            raise Ambiguous(f"JSON key {key!r} carries NUL")
        low = key.casefold()
        if low.strip() == "_method":
            raise Ambiguous(f"JSON key {key!r} is a method override (Laravel, Symfony): the "
                            "policy judges the request method")
        if low in folded:
            what = "" if key in out else " (differing only by case)"
            raise Ambiguous(f"duplicate key {key!r}{what}: readers would disagree on its value")
        folded.add(low)
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise Ambiguous(f"JSON number {name} is not standard JSON")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise Ambiguous(f"JSON number {text[:40]} is outside the float range")
    return value


def _exact_float(text: str) -> float:
    """``_float``, refusing a number a double does not hold: the shortest decimal that
    reads back as the same double (``repr``) must have the value sent."""
    value = _float(text)
    if Decimal(repr(value)) != Decimal(text):
        raise Ambiguous(f"JSON number {text[:40]} does not survive a double (read as "
                        f"{value!r}); upstreams that parse decimals read another value")
    return value


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # past Python's digit limit
        raise Ambiguous(f"JSON number {text[:40]}... is outside the float range") from None
    if abs(value) > 1.7976931348623157e308:
        raise Ambiguous(f"JSON number {text[:40]}... is outside the float range")
    return value


def _exact_int(text: str) -> int:
    value = _int(text)
    if abs(value) > _EXACT_INTS and int(float(value)) != value:
        raise Ambiguous(f"JSON number {text[:40]} does not survive a double")
    return value


def _check(value: Any, depth: int) -> None:
    """Depth (``depth``: containers around ``value``) and lone surrogates (the decoder
    accepts ``\\ud800``; UTF-8 cannot carry it)."""
    if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
        raise Ambiguous(f"JSON nesting deeper than {MAX_DEPTH}")
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Ambiguous("JSON string with a lone surrogate") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth)
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def _is_json_type(content_type: str | None) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def json_body(body: bytes, content_type: str | None, exact: bool = False) -> Any:
    """The body parsed with one reading: JSON (any content type it parses under), a form
    as a flat dict (``fields``), else None; ``Ambiguous`` when it has two readings or
    claims to be JSON and is not. ``exact`` (a ``when`` compares the body): numbers a
    double does not hold are refused too."""
    if not body:
        return None
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == FORM:
        return fields(body.decode("utf-8", "replace"), "form body")
    claims = _is_json_type(content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if claims:
            raise Ambiguous("the body is not JSON: not valid UTF-8") from None
        return None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant,
                           parse_float=_exact_float if exact else _float,
                           parse_int=_exact_int if exact else _int)
    except RecursionError:
        raise Ambiguous(f"JSON nesting deeper than {MAX_DEPTH}") from None
    except Ambiguous:
        raise
    except ValueError as exc:  # not JSON (also int() past Python's digit limit)
        if claims:
            raise Ambiguous(f"the body is not JSON ({exc})") from None
        return None
    _check(value, 0)
    return value

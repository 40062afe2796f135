"""Bodies: media types, and a body's readings (pure).

Two readers, one for each use:

- ``json_body(body, content_type)``: what the policy judges and the journal records
  of a call being decided: a JSON body with one reading, or ``Ambiguous``: duplicate
  keys (after unescaping), keys equal but for case, keys with NUL, lone surrogates,
  nesting deeper than 64, numbers outside the float range, non-standard constants
  (NaN, Infinity), a ``_method`` key and, when a ``when`` compares the body, numbers a
  double does not hold. A form body is read by ``fields`` (one reading as well).
- ``parse_body(body, content_type)``: lenient, for what was already decided and
  journaled (a response, a journaled request body): JSON, a flat dict for a form,
  else None; never raises.

``form_key_path`` reads a form key's bracket notation (``metadata[tier]``) and
``encode`` writes a value back in it, as form APIs (Stripe) take it.

>>> media_type("Application/JSON; charset=utf-8"), is_json_type("application/problem+json")
('application/json', True)
>>> fields("Force=1", "query", aliases=True)
{'Force': '1', 'force': '1'}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

from gateway.core import jsontext
from gateway.core.canonical import caseless
from gateway.errors import Ambiguous

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_DEPTH = 64
_EXACT_INTS = 2**53  # every integer up to this is a double
_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_type(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == JSON or kind.endswith("+json")


def parse_body(body: bytes, content_type: str | None) -> Any:
    """The body as JSON (or a flat dict for a form), else None."""
    if not body:
        return None
    if media_type(content_type) == FORM:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return jsontext.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


# --- one reading -------------------------------------------------------------------------


def fields(text: str, what: str, aliases: bool = False) -> dict[str, str]:
    """A query string or form body with one reading, as ``{name: value}``; ``Ambiguous``
    when frameworks would read it two ways: a name given twice, also as another case or
    as ``name[]`` (Flask takes the first, PHP the last, Express a list), a ``;``
    separator (some servers split on it), a name with leading or trailing spaces or
    ``+``. With ``aliases``, a lone name a lenient upstream reads as another
    (``Force``, ``force[]``) is also given under that other name, so a rule on
    ``force`` judges it.
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
    return caseless(name)


def named_twice(query: Mapping[str, str], form: Mapping[str, Any]) -> str | None:
    """A parameter the query and a form body both give (as ``field_key`` reads names),
    else None: many servers read the two as one set of parameters (AWS's query APIs,
    PHP, Rails), some letting the body win, so a rule that judged the query's would
    judge the other one.

    >>> named_twice({"Action": "DescribeInstances"}, {"action": "TerminateInstances"})
    'action'
    >>> named_twice({"Action": "DescribeInstances"}, {"InstanceId.1": "i-1"}) is None
    True
    """
    asked = {field_key(name, nested=True) for name in query}
    return next((name for name in form if field_key(name, nested=True) in asked), None)


def named_twice_aws(headers: list[tuple[str, str]], query: Mapping[str, str],
                    body: Any) -> bool:
    """Whether a call names an AWS operation in ``X-Amz-Target`` (the JSON protocol, also
    spelt ``X_Amz_Target``) and in an ``Action`` parameter (the query protocol: the query
    or the body): services that speak both (SQS) may run the one a rule did not judge.

    >>> named_twice_aws([("x-amz-target", "AmazonSQS.DeleteQueue")], {"Action": "X"}, None)
    True
    >>> named_twice_aws([("x-amz-target", "DynamoDB_20120810.PutItem")], {}, {"Item": {}})
    False
    """
    if not any(name.replace("_", "-").lower() == "x-amz-target" for name, _ in headers):
        return False
    named = [*query, *(body if isinstance(body, dict) else ())]
    return any(field_key(name, nested=True) == "action" for name in named)


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


# Built once: ``json.loads`` with hooks builds a decoder (and its scanner) on every call.
_READERS = {exact: json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant,
                                    parse_float=_exact_float if exact else _float,
                                    parse_int=_exact_int if exact else _int)
            for exact in (False, True)}


def json_body(body: bytes, content_type: str | None, exact: bool = False) -> Any:
    """The body parsed with one reading: JSON (any content type it parses under), a form
    as a flat dict (``fields``), else None; ``Ambiguous`` when it has two readings or
    claims to be JSON and is not. ``exact`` (a ``when`` compares the body): numbers a
    double does not hold are refused too."""
    if not body:
        return None
    if media_type(content_type) == FORM:
        return fields(body.decode("utf-8", "replace"), "form body")
    claims = is_json_type(content_type)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if claims:
            raise Ambiguous("the body is not JSON: not valid UTF-8") from None
        return None
    try:
        if text.startswith("\ufeff"):  # as json.loads says of text (not bytes) with a BOM
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _READERS[exact].decode(text)
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


# --- form keys -----------------------------------------------------------------------------


def form_key_path(key: str) -> list[str]:
    """``metadata[tier]`` -> ``["metadata", "tier"]``; ``items[0][price]`` -> 3 parts."""
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    tail = "[" + rest
    parts = _BRACKET.findall(tail)
    if "".join(f"[{p}]" for p in parts) != tail:  # not bracket notation after all
        return [key]
    return [head, *parts]


def encode(body: Any, content_type: str) -> bytes | None:
    """A body built as a value (an undo's) as sent: a form in bracket notation, else JSON."""
    if body is None:
        return None
    if media_type(content_type) == FORM and isinstance(body, dict):
        return urlencode(list(_form_pairs(body, ""))).encode()
    return json.dumps(body).encode()


def _form_pairs(value: Any, prefix: str) -> Any:
    """Nested values in the bracket notation form APIs use (``metadata[plan]=pro``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _form_pairs(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _form_pairs(item, f"{prefix}[{index}]")
    else:
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        yield prefix, text

"""JSON text exactly as the standard library writes and reads it, by orjson where that is the same.

The audit chain hashes ``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` and the journal keeps bodies as compact text; every write
makes both, and the standard library's encoder costs 3-8 us a value where
orjson costs well under one. The two write the same bytes for strings (any
code point, escapes included), integers of up to 64 bits, booleans, null,
lists and objects with string keys (sorted the same way: by code point); they
differ for floats (``1e+16`` against ``1e16``), NaN, integers beyond 64 bits,
lone surrogates and types the standard library refuses (a datetime). So a value
is first checked to hold only the types on which they agree; anything else goes
to the standard library, whose text (or error) stays the reference. Old audit
records therefore still verify: the bytes hashed are the bytes they always were.

Reading (``loads``) is the same idea the other way: orjson reads what
``json.loads`` reads to the same value, except integers past 64 bits (it makes
them floats, silently) and what it refuses (NaN, numbers past the float range,
lone surrogates, a BOM, UTF-16, nesting past 1024), where the standard library
reads again. An integer past 64 bits has at least 19 digits in a row, so a body
holding such a run (anywhere, even in a string) is read by the standard library.

>>> compact({"b": 1, "a": "é"}), sorted_bytes({"b": 1, "a": [True, None]})
('{"b":1,"a":"é"}', b'{"a":[true,null],"b":1}')
>>> loads(b'{"n": 18446744073709551616, "x": 0.1}')
{'n': 18446744073709551616, 'x': 0.1}
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_SCALARS = frozenset({str, int, bool, type(None)})
_DEPTH = 64  # deeper values go to the standard library (its recursion, its errors)
# digits as "0": a run of 19 is then a substring (4x faster than a regex's [0-9]{19})
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_LONG = b"0" * 19  # an integer past 64 bits has at least this many digits in a row


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only types on which orjson and the standard library agree."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > _DEPTH:
        return False
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _SCALARS and not _plain(v, depth + 1)):
                return False
        return True
    if kind is list or kind is tuple:
        for v in value:
            if type(v) not in _SCALARS and not _plain(v, depth + 1):
                return False
        return True
    return False


def compact(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``."""
    if _plain(value):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sorted_bytes(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
    UTF-8 encoded."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """``json.loads(data)``: the same value, or the same error."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:  # the standard library's reading (or error) is the reference
        return json.loads(data)
    if _LONG in data.translate(_DIGITS):  # looked at only once read: a binary body fails fast
        return json.loads(data)  # perhaps an integer past 64 bits, which orjson made a float
    return value

"""jsontext writes the standard library's bytes (the audit chain hashes them)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.jsontext import compact, loads, sorted_bytes
from gateway.core.redact import REDACTED, hides, redact_json

VALUES: list[Any] = [
    {}, [], None, True, 0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70), "", "é\u2028\U0001f600",
    "\x00\x1f\x7f\"\\/\n\t", "\ud800", 1.5, 1e16, float("nan"), float("inf"), (1, "a"),
    {"b": 1, "a": [True, None, {"é": 1, "\U0001f600": 2, "\uffff": 3, "z": "\ud83d"}]},
    {1: "int key"}, {"nested": [[[[{"deep": [1.0e-7]}]]]]},
]


def _outcome(make: Any, value: Any) -> Any:
    try:
        return make(value)
    except Exception as exc:  # noqa: BLE001 - the same error is the same outcome
        return type(exc)


@pytest.mark.parametrize("value", VALUES)
def test_the_same_text_as_the_standard_library(value: Any) -> None:
    assert compact(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert _outcome(sorted_bytes, value) == _outcome(lambda v: json.dumps(
        v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(), value)


def test_random_strings_and_keys() -> None:
    rng = random.Random(1)
    chars = [chr(i) for i in range(0x300)] + ["\u2028", "\ue000", "\uffff", "\U00010000"]
    for _ in range(2000):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        key = "".join(rng.choice(chars) for _ in range(rng.randint(0, 4)))
        value = {key: text, "list": [text, {key: 1, "a": key}]}
        assert sorted_bytes(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                                 ensure_ascii=False).encode()


def test_what_the_standard_library_refuses_is_still_refused() -> None:
    with pytest.raises(TypeError):
        compact({"at": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        sorted_bytes({"at": datetime(2026, 1, 1, tzinfo=UTC)})


@pytest.mark.parametrize("value", [
    {"a": 1}, {"token": "t"}, {"token": REDACTED}, [{"x": [{"password": 1}]}], [1, "a"],
    {"nested": {"api_key": None}}, {"session": {"a": 1}}, "token", {1: {"token": "t"}},
])
def test_hides_is_whether_redaction_changes_a_value(value: Any) -> None:
    assert hides(value) == (redact_json(value) != value)


TEXTS: list[bytes] = [
    b'{"a":1,"b":[true,null,"\\u00e9"],"a":2}', b"-0", b"-0.0", b"0.1", b"1e-400", b"1e400",
    b"NaN", b"-Infinity", b"18446744073709551615", b"18446744073709551616",
    b"-9223372036854775809", b"123456789012345678901234567890", b'{"id": "1234567890123456789"}',
    b"1.00000000000000011102230246251565404236316680908203125", b'"\\ud800"', b'"\xed\xa0\x80"',
    b"\xef\xbb\xbf{}", '{"é": 1}'.encode("utf-16"), b'"a\x01b"', b"[" * 1100 + b"]" * 1100,
    b"{} x", b"", b"\xff", b' {"a" : [1 , 2.5e3]} ',
]


@pytest.mark.parametrize("text", TEXTS)
def test_read_as_the_standard_library_reads(text: bytes) -> None:
    """Big integers stay integers (orjson would make them floats), and what json.loads
    reads that orjson refuses (NaN, a BOM, UTF-16, a lone surrogate) is still read."""
    expected = _outcome(json.loads, text)
    got = _outcome(loads, text)
    assert repr(got) == repr(expected)
    assert type(got) is type(expected)


def test_random_numbers_read_as_the_standard_library_reads() -> None:
    rng = random.Random(2)
    for _ in range(5000):
        number = rng.choice([rng.random() * 10 ** rng.randint(-300, 300),
                             rng.getrandbits(rng.randint(1, 90)) * rng.choice([1, -1])])
        text = f'{{"n": [{number!r}, "{number}"]}}'.encode()
        assert repr(loads(text)) == repr(json.loads(text))

"""jsontext writes the standard library's bytes (the audit chain hashes them)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.jsontext import compact, sorted_bytes
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

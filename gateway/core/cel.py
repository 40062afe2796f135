"""CEL ``when`` conditions, compiled once at load and evaluated per call.

cel-python reports evaluation problems either by raising or by returning a
``CELEvalError`` value; both become ``ConditionError`` here so the policy can
deny the call (a condition that cannot be evaluated never falls through).
"""

from __future__ import annotations

from typing import Any

import celpy
from celpy import celtypes

_ENV = celpy.Environment()


_to_cel = celpy.json_to_cel  # type: ignore[attr-defined]


class ConditionError(Exception):
    pass


class Condition:
    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _ENV.program(_ENV.compile(source))
        except Exception as exc:  # CELParseError and friends
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"invalid CEL in when: {first_line}") from None

    def evaluate(self, activation: dict[str, Any]) -> bool:
        try:
            result = self._program.evaluate(
                {name: _to_cel(value) for name, value in activation.items()})
        except Exception as exc:
            raise ConditionError(f"when {self.source!r} could not be evaluated: {exc}") from exc
        if isinstance(result, celtypes.BoolType):
            return bool(result)
        raise ConditionError(f"when {self.source!r} gave {result!r}, not a boolean")

"""CEL ``when`` conditions, compiled once at load and evaluated per call.

cel-python reports evaluation problems either by raising or by returning a
``CELEvalError`` value; both become ``ConditionError`` here so the policy can
deny the call (a condition that cannot be evaluated never falls through).
"""

from __future__ import annotations

import re
from typing import Any

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

from gateway.errors import ConditionError

_ENV = celpy.Environment()


def _typed(name: str) -> Any:
    """cel-python's comparison, refusing bool against a number: its BoolType is an int,
    so ``true <= 1000`` held and ``{"amount": true}`` passed ``amount <= 1000``. CEL
    has no such overload; the error makes the ``when`` deny."""
    compare = base_functions[name]

    def strict(a: Any, b: Any) -> Any:
        if isinstance(a, celtypes.BoolType) != isinstance(b, celtypes.BoolType) and (
                isinstance(a, (int, float)) and isinstance(b, (int, float))):
            raise TypeError(f"no such overload: {type(a).__name__} {name} "
                            f"{type(b).__name__}")
        return compare(a, b)
    return strict


_STRICT = {name: _typed(name) for name in ("_<_", "_<=_", "_>_", "_>=_", "_==_", "_!=_")}


_to_cel = celpy.json_to_cel  # type: ignore[attr-defined]
_CLASS = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")


def _message(exc: BaseException) -> str:
    """cel-python's text, without the tuple repr its errors print as
    (``("no such member", <class 'KeyError'>, None)`` -> ``no such member``)."""
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return _CLASS.sub(r"\1", first).strip() or type(exc).__name__


class Condition:
    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = _ENV.program(_ENV.compile(source), functions=_STRICT)
        except Exception as exc:  # CELParseError and friends
            column = getattr(exc, "column", None)
            where = f" at column {column}" if isinstance(column, int) else ""
            if isinstance(exc, CELParseError):
                raise ValueError(f"invalid CEL in when: syntax error{where} of {source!r}") \
                    from None
            raise ValueError(f"invalid CEL in when {source!r}: {_message(exc)}") from None

    def evaluate(self, activation: dict[str, Any]) -> bool:
        try:
            result = self._program.evaluate(
                {name: _to_cel(value) for name, value in activation.items()})
        except Exception as exc:
            raise ConditionError(f"when {self.source!r} could not be evaluated: "
                                 f"{_message(exc)}") from exc
        if isinstance(result, celtypes.BoolType):
            return bool(result)
        if isinstance(result, CELEvalError):
            raise ConditionError(f"when {self.source!r} could not be evaluated: "
                                 f"{_message(result)}")
        raise ConditionError(f"when {self.source!r} gave {type(result).__name__} {result!s}, "
                             "not a boolean")

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


_LITERAL = r"""(?:'([^'\\\n]*)'|"([^"\\\n]*)")"""  # a string without escapes
_TERM = re.compile(
    rf"""\s*(?:{_LITERAL}\s+in\s+request\.(query|headers)"""
    rf"""|request\.(query|headers)\[{_LITERAL}\]\s*==\s*{_LITERAL})\s*(&&|$)""")


def lookups(source: str) -> tuple[tuple[str, str, str | None], ...] | None:
    """A ``when`` that only asks for names and values in the query or the headers, as a
    conjunction of ``(where, name, value or None: present)``; else None.

    Policies written from API descriptions tell hundreds of operations on one path
    apart this way (``'Action' in request.query && request.query['Action'] ==
    'TerminateInstances'``); cel-python takes about half a millisecond for each, so
    a call to the last of them took the policy over a second. Only a term that
    cannot fail qualifies: each value compared is of a name the same ``when`` asks
    to be present, so the ``&&`` of plain booleans is what CEL gives.

    >>> lookups("'Action' in request.query && request.query['Action'] == 'Run'")
    (('query', 'Action', None), ('query', 'Action', 'Run'))
    >>> lookups("request.query['Action'] == 'Run'") is None  # no such key: an error
    True
    """
    terms: list[tuple[str, str, str | None]] = []
    at = 0
    while at < len(source):
        m = _TERM.match(source, at)
        if m is None:
            return None
        if m.group(3) is not None:
            terms.append((m.group(3), _text(m, 1), None))
        else:
            terms.append((m.group(4), _text(m, 5), _text(m, 7)))
        at = m.end()
        if m.group(9) == "&&" and at == len(source):
            return None  # (not CEL: the compiler refuses it first)
    present = {(where, name) for where, name, value in terms if value is None}
    if not terms or any(value is not None and (where, name) not in present
                        for where, name, value in terms):
        return None
    return tuple(terms)


_HEADER_READ = re.compile(
    rf"""request\.headers\[\s*{_LITERAL}\s*\]|{_LITERAL}\s+in\s+request\.headers\b"""
    r"""|request\.headers\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()""")


def header_names(source: str) -> frozenset[str] | None:
    """The lower-case header names a ``when`` reads, or None when it reads the headers
    in a way that does not name them (``request.headers.exists(...)``, ``size()``).

    >>> sorted(header_names("'x-force' in request.headers && request.headers.api_key == 'k'"))
    ['api_key', 'x-force']
    >>> header_names("request.headers.exists(h, h.startsWith('x-'))") is None
    True
    """
    names: set[str] = set()

    def named(m: re.Match[str]) -> str:
        names.add(next(g for g in m.groups() if g is not None).lower())
        return ""
    rest = _HEADER_READ.sub(named, source)
    return None if "request.headers" in rest else frozenset(names)


def _text(m: re.Match[str], group: int) -> str:
    single = m.group(group)
    return single if single is not None else m.group(group + 1)


class Condition:
    __slots__ = ("_program", "_lookups", "source", "headers")

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
        self._lookups = lookups(source)
        # the headers it reads (None: it reads them without naming them)
        self.headers = header_names(source) if "headers" in source else frozenset()

    def evaluate(self, activation: dict[str, Any]) -> bool:
        if self._lookups is not None:
            found = self._looked_up(activation)
            if found is not None:
                return found
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

    def _looked_up(self, activation: dict[str, Any]) -> bool | None:
        """The ``lookups`` conjunction over plain dicts of strings, as CEL would give
        it; None when the activation is not that shape (then CEL decides)."""
        request = activation.get("request")
        if not isinstance(request, dict):
            return None
        for where, name, value in self._lookups or ():
            fields = request.get(where)
            if not isinstance(fields, dict):
                return None
            if value is None:
                if name not in fields:
                    return False
                continue
            if name not in fields:
                return False  # (the ``in`` term the same ``when`` has is false)
            got = fields[name]
            if not isinstance(got, str):
                return None  # a list, a number, null: CEL's own comparison
            if got != value:
                return False
        return True

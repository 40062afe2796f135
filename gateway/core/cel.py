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
    rf"""\s*(?:{_LITERAL}\s+in\s+request\.(query|headers|body)"""
    rf"""|request\.(query|headers|body)\[{_LITERAL}\]\s*==\s*{_LITERAL}"""
    r"""|(type)\(request\.body\)\s*==\s*map)""")
_OPEN = re.compile(r"\s*\(")
_AFTER = re.compile(r"\s*(&&|\|\||\)|$)")
MAP_GUARD = ("type", "body", "map")  # ``type(request.body) == map``

Term = tuple[str, str, str | None]  # (where, name, value or None: present)


def lookups(source: str) -> tuple[tuple[Term, ...], ...] | None:
    """A ``when`` that only asks for names and values in the query, the headers or a
    form body, as alternatives (``||``) of conjunctions (``&&``) of ``(where, name,
    value or None: present)``; else None.

    Policies written from API descriptions tell hundreds of operations on one path
    apart this way (``'Action' in request.query && request.query['Action'] ==
    'TerminateInstances'``, or the same in a form body); cel-python takes about half a
    millisecond for each, so a call to the last of them took the policy over a second.
    Only a term that cannot fail qualifies: each value compared is of a name the same
    conjunction asks to be present, and one that reads the body also asks
    ``type(request.body) == map`` (``MAP_GUARD``), so the ``&&`` and ``||`` of plain
    booleans are what CEL gives.

    >>> lookups("'Action' in request.query && request.query['Action'] == 'Run'")
    ((('query', 'Action', None), ('query', 'Action', 'Run')),)
    >>> lookups("request.query['Action'] == 'Run'") is None  # no such key: an error
    True
    >>> lookups("'A' in request.query || type(request.body) == map && 'A' in request.body")
    ((('query', 'A', None),), (('type', 'body', 'map'), ('body', 'A', None)))
    """
    alternatives: list[tuple[Term, ...]] = []
    terms: list[Term] = []
    at, depth = 0, 0
    while True:
        if not terms:  # an alternative starts: ``(`` is allowed around it
            m = _OPEN.match(source, at)
            if m is not None:
                at, depth = m.end(), depth + 1
        m = _TERM.match(source, at)
        if m is None:
            return None
        if m.group(9) is not None:
            terms.append(MAP_GUARD)
        elif m.group(3) is not None:
            terms.append((m.group(3), _text(m, 1), None))
        else:
            terms.append((m.group(4), _text(m, 5), _text(m, 7)))
        after = _AFTER.match(source, m.end())
        if after is None:
            return None
        at, joint = after.end(), after.group(1)
        if joint == ")":
            if depth != 1:
                return None
            depth = 0
            after = _AFTER.match(source, at)
            if after is None or after.group(1) in ("&&", ")"):
                return None
            at, joint = after.end(), after.group(1)
        if joint == "&&":
            continue
        if depth or not _sound(terms):
            return None
        alternatives.append(tuple(terms))
        terms = []
        if joint == "":
            return tuple(alternatives) if at == len(source) else None


def _sound(terms: list[Term]) -> bool:
    """A conjunction CEL answers without an error: each value compared is of a name it
    asks to be present, and one that reads the body asks that it be a map."""
    present = {(where, name) for where, name, value in terms if value is None}
    return all((value is None or (where, name) in present)
               and (where != "body" or MAP_GUARD in terms)
               for where, name, value in terms if (where, name, value) != MAP_GUARD)


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
    rest = _HEADER_READ.sub(named, source)  # any other mention: ``request['headers']``
    return None if "headers" in rest else frozenset(names)


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

    @property
    def alternatives(self) -> tuple[tuple[Term, ...], ...] | None:
        """The ``lookups`` this ``when`` is, if it is one (else None: CEL decides)."""
        return self._lookups

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
        """The ``lookups`` alternatives over plain dicts of strings, as CEL would give
        them; None when the activation is not that shape (then CEL decides)."""
        request = activation.get("request")
        if not isinstance(request, dict):
            return None
        for terms in self._lookups or ():
            holds = _holds(terms, request)
            if holds is not False:
                return holds  # True (``||`` holds), or None: CEL decides
        return False


def _holds(terms: tuple[Term, ...], request: dict[str, Any]) -> bool | None:
    for term in terms:
        if term == MAP_GUARD:
            if not isinstance(request.get("body"), dict):
                return False
            continue
        where, name, value = term
        fields = request.get(where)
        if not isinstance(fields, dict):
            # the body's: the conjunction's guard is false; else not the shape CEL gets
            return False if where == "body" else None
        if name not in fields:
            return False  # (the ``in`` term the same conjunction has is false)
        if value is None:
            continue
        got = fields[name]
        if not isinstance(got, str):
            return None  # a list, a number, null: CEL's own comparison
        if got != value:
            return False
    return True

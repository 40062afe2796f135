"""Rules indexed by the value their ``when`` requires (pure).

A policy written from an AWS description puts hundreds of operations on ``/``
and tells them apart by one name's value (``'Action' in request.query &&
request.query['Action'] == 'TerminateInstances'``, or the same in a form body
or ``X-Amz-Target``). The path trie cannot tell them apart, so every call bound
all of them and ran each ``when`` in turn: a millisecond or more on EC2's 997
rules. ``Dispatch`` reads those ``when``s once (``gateway.core.cel.lookups``):
each alternative of one needs a name's exact value, so a rule is looked up by
the value the call gives and the others are never tried. A rule it cannot read
so (no ``when``, a CEL ``when``, an alternative that only asks for presence)
is always tried. Decisions are the same: a rule left out could not hold.

>>> from gateway.core.cel import Condition
>>> when = "'Action' in request.query && request.query['Action'] == 'Run'"
>>> dispatch = Dispatch({0: Condition(when), 2: Condition("request.body.n > 1")}, 3)
>>> sorted(dispatch.possible({"Action": "Run"}, {}, None))
[0, 1, 2]
>>> sorted(dispatch.possible({"Action": "Stop"}, {}, None))
[1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.cel import MAP_GUARD, Condition


class Dispatch:
    """Which rules of one upstream a call could match, by the values their ``when``s
    require; ``count`` is the number of rules."""

    __slots__ = ("_always", "_keys", "_every")

    def __init__(self, conditions: Mapping[int, Condition], count: int) -> None:
        always: set[int] = set()
        keys: dict[tuple[str, str], dict[str, set[int]]] = {}
        for index in range(count):
            condition = conditions.get(index)
            alternatives = condition.alternatives if condition is not None else None
            if alternatives is None:
                always.add(index)
                continue
            needs = [_needed(terms) for terms in alternatives]
            if any(need is None for need in needs):
                always.add(index)  # one alternative holds with any value
                continue
            for where, name, value in (n for n in needs if n is not None):
                keys.setdefault((where, name), {}).setdefault(value, set()).add(index)
        self._always = frozenset(always)
        self._keys = {key: {value: frozenset(rules) for value, rules in values.items()}
                      for key, values in keys.items()}
        # every rule a key names: tried when the call's value is not a string (CEL's
        # comparison then decides, an error included)
        self._every = {key: frozenset().union(*values.values())
                       for key, values in self._keys.items()}

    @property
    def narrows(self) -> bool:
        """Whether any rule is looked up by value (else every rule is always tried)."""
        return bool(self._keys)

    def possible(self, query: Mapping[str, Any], headers: Mapping[str, Any],
                 body: Any) -> frozenset[int]:
        """The rules whose ``when`` could hold for a call with this query, these
        headers (lower-case names) and this body (a form's fields, JSON, or None)."""
        found = self._always
        for (where, name), values in self._keys.items():
            fields = query if where == "query" else headers if where == "headers" else body
            if not isinstance(fields, Mapping) or name not in fields:
                continue  # the alternative's ``in`` (or the body's map guard) is false
            got = fields[name]
            rules = values.get(got) if isinstance(got, str) else self._every[(where, name)]
            if rules:
                found = found | rules
        return found


def _needed(terms: tuple[tuple[str, str, str | None], ...]) -> tuple[str, str, str] | None:
    """The first ``(where, name, value)`` a conjunction requires, else None."""
    for term in terms:
        where, name, value = term
        if value is not None and term != MAP_GUARD:
            return where, name, value
    return None

"""Path templates and the segment trie that matches them.

A template is a sequence of segments: a literal, ``{name}`` (one segment,
bound), ``*`` (one segment), a final ``**`` (any rest, also empty) or a final
``{name+}`` (one or more segments, bound with their ``/``: an S3 object key). All the
rules of an upstream are compiled into one trie, so matching a request walks
its path once instead of trying every rule's regular expression in turn; the
rules that match come back in file order and the policy keeps the first one
that also fits the method, the agent and the ``when`` condition. A request
segment that is not a node's literal but folds to it (``ADMIN``, ``admin;x``,
``admin.``: ``gateway.core.canonical.fold``) is ``Ambiguous``: an upstream may
serve it as the literal, which the rules did not judge it as.

>>> trie = PathTrie()
>>> trie.add(0, Template.parse("/customers/{id}"))
>>> trie.add(1, Template.parse("/**"))
>>> trie.match(["customers", "42"])
[(0, {'id': '42'}), (1, {})]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.core.canonical import fold
from gateway.errors import Ambiguous, TemplateError

_NAME = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_GREEDY = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\+\}$")


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    segments: tuple[str, ...]  # literal text, "{name}", "*" or "**"

    @classmethod
    def parse(cls, text: str) -> Template:
        if not isinstance(text, str) or not text.startswith("/"):
            raise TemplateError(f"path template {text!r} must start with '/'")
        raw = text[1:].split("/") if text != "/" else []
        segments: list[str] = []
        for i, seg in enumerate(raw):
            if seg == "" and i == len(raw) - 1 and i > 0:
                continue  # a trailing slash matches like the path without it
            if seg in ("", ".", ".."):
                raise TemplateError(f"path template {text!r} has an empty or dot segment")
            if seg == "**" or _GREEDY.match(seg):
                if i != len(raw) - 1 and raw[i + 1:] != [""]:
                    raise TemplateError(f"path template {text!r}: {seg!r} must be the last "
                                        "segment")
            elif seg != "*" and ("{" in seg or "}" in seg or "*" in seg):
                if not _NAME.match(seg):
                    raise TemplateError(
                        f"path template {text!r}: bad segment {seg!r} (use a literal, "
                        "{name}, *, or a final ** or {name+})")
            segments.append(seg)
        names = [s[1:-1].rstrip("+") for s in segments if s.startswith("{")]
        if len(names) != len(set(names)):
            raise TemplateError(f"path template {text!r} binds a name twice")
        return cls(text, tuple(segments))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s[1:-1].rstrip("+") for s in self.segments if s.startswith("{"))

    def expand(self, params: dict[str, str]) -> str:
        """Fill in ``{name}`` segments; ``*`` and ``**`` cannot be expanded."""
        out = []
        for seg in self.segments:
            if seg.startswith("{"):
                out.append(params[seg[1:-1].rstrip("+")])
            elif seg in ("*", "**"):
                raise TemplateError(f"path template {self.text!r} cannot be expanded ({seg})")
            else:
                out.append(seg)
        return "/" + "/".join(out)


class _Entries(list[tuple[int, tuple[str | None, ...]]]):
    """A node's (rule index, names of the single segments on the way, None for ``*``)
    in file order, and the same by rule index (``names``)."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[int, tuple[str | None, ...]] = {}

    def add(self, index: int, names: tuple[str | None, ...]) -> None:
        self.append((index, names))
        self.names.setdefault(index, names)


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    folds: dict[str, str] = field(default_factory=dict)  # fold(literal) -> literal
    single: _Node | None = None
    ends: _Entries = field(default_factory=_Entries)
    rest: _Entries = field(default_factory=_Entries)
    # a final {name+}: the rest (at least one segment) bound to the last name
    greedy: _Entries = field(default_factory=_Entries)


class PathTrie:
    """All templates of one upstream; ``match`` returns (rule index, params) in index order."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, index: int, template: Template) -> None:
        node, names = self._root, list[str | None]()
        for seg in template.segments:
            if seg == "**":
                node.rest.add(index, tuple(names))
                return
            if seg.endswith("+}"):
                node.greedy.add(index, (*names, seg[1:-2]))
                return
            if seg == "*" or seg.startswith("{"):
                if node.single is None:
                    node.single = _Node()
                node = node.single
                names.append(None if seg == "*" else seg[1:-1])
            else:
                node.folds.setdefault(fold(seg), seg)
                node = node.literal.setdefault(seg, _Node())
        node.ends.add(index, tuple(names))

    def match(self, segments: list[str], only: frozenset[int] | None = None,
              ) -> list[tuple[int, dict[str, str]]]:
        """The rules whose template matches, with their bound names; ``only``: of these
        rules alone (``gateway.core.policy.dispatch``), the walk and its ``Ambiguous``
        unchanged."""
        found: list[tuple[int, dict[str, str]]] = []
        self._walk(self._root, segments, 0, [], found, only)
        found.sort(key=lambda item: item[0])
        return found

    def _walk(self, node: _Node, segs: list[str], i: int, values: list[str],
              found: list[tuple[int, dict[str, str]]], only: frozenset[int] | None) -> None:
        for index, names in _among(node.rest, only):
            found.append((index, _bind(names, values)))
        if node.greedy and i < len(segs):
            for index, names in _among(node.greedy, only):
                found.append((index, _bind(names, [*values, "/".join(segs[i:])])))
        if i == len(segs):
            for index, names in _among(node.ends, only):
                found.append((index, _bind(names, values)))
            return
        child = node.literal.get(segs[i])
        if child is not None:
            self._walk(child, segs, i + 1, values, found, only)
        elif node.folds:
            alias = node.folds.get(fold(segs[i]))
            if alias is not None:
                raise Ambiguous(f"path segment {segs[i]!r} differs from {alias!r} only by "
                                "case, Unicode form, trailing dots or spaces, or ';' "
                                f"parameters; send {alias!r}")
        if node.single is not None:
            values.append(segs[i])
            self._walk(node.single, segs, i + 1, values, found, only)
            values.pop()


def _among(entries: _Entries, only: frozenset[int] | None,
           ) -> list[tuple[int, tuple[str | None, ...]]] | _Entries:
    """``entries`` (rule index, names), or those of the rules in ``only``: looked up one
    by one when they are few beside the entries (hundreds of rules on ``/``)."""
    if only is None or not entries:
        return entries
    if len(only) * 8 < len(entries):
        return [(index, entries.names[index]) for index in only if index in entries.names]
    return [entry for entry in entries if entry[0] in only]


def _bind(names: tuple[str | None, ...], values: list[str]) -> dict[str, str]:
    if not names:
        return {}
    return {name: value for name, value in zip(names, values) if name is not None}

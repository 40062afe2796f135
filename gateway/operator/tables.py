"""Rendering for terminals: escaped text, fixed-width tables, label/value lines."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any


def clean(text: str) -> str:
    """Escape control characters: agents and upstreams choose much of what is printed."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return clean(str(value))


def json_value(value: Any) -> str:
    return clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def when(value: Any) -> str:
    """An ISO time to the second, for tables."""
    return re.sub(r"\.\d+", "", value) if isinstance(value, str) else text(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns as wide as their widest cell, two spaces apart."""
    cells = [[text(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [list(headers), *cells])


def fields(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in pairs) + 2
    return [f"{label + ':':<{width}}{text(value)}" for label, value in pairs]


def indented(value: Any, indent: str = "  ") -> list[str]:
    dumped = json.dumps(value, indent=2, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    return [indent + clean(line) for line in dumped.splitlines()]


def request_line(item: dict[str, Any]) -> str:
    query = item.get("query")
    if isinstance(query, dict):
        query = "&".join(f"{k}={v}" for k, v in query.items())
    target = f"{item.get('path') or ''}?{query}" if query else f"{item.get('path') or ''}"
    return f"{item.get('method') or '?'} {target}"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list; anything else is no objects."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def items(data: Any) -> list[dict[str, Any]]:
    """The objects of an ``{"items": [...]}`` answer."""
    return dicts(data.get("items")) if isinstance(data, dict) else []


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"

"""The schema of an MCP upstream's policy file (``kind: mcp``, pure).

A file with ``kind: mcp`` puts an MCP server behind the upstream name: its
rules (``McpRule``) match tool names (globs) and a ``when`` over the call's
``arguments``, capture the prior state with a read tool and undo with another
tool. JSON-RPC methods other than ``tools/call`` are protocol plumbing: they
pass, as reads.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.core.cel import Condition
from gateway.core.policy.schema import (
    Action,
    Approval,
    Credentials,
    Delay,
    Mode,
    PolicyBase,
    Strict,
    check_action_extras,
)

TOOLS_CALL = "tools/call"  # the one MCP method rules judge; journaled as the entry's method
_TOOL_GLOB = re.compile(r"^[A-Za-z0-9_./*?\[\]!-]{1,128}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ROOTS = ("arguments", "prior")


def _check_template(value: Any, where: str) -> None:
    """Placeholders in tool arguments name ``{arguments.x}`` or ``{prior.x}`` (dotted)."""
    if isinstance(value, dict):
        for item in value.values():
            _check_template(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_template(item, where)
    elif isinstance(value, str):
        for name in _PLACEHOLDER.findall(value):
            root, _, rest = name.partition(".")
            if root not in _ROOTS or not rest or "" in rest.split("."):
                raise ValueError(f"{where}: placeholder {{{name}}} must name "
                                 "{arguments.NAME} or {prior.NAME}")


def _tool_name(value: str) -> str:
    if not _TOOL_GLOB.match(value) or any(c in value for c in "*?[]!"):
        raise ValueError(f"tool name {value!r} must be 1-128 of A-Z a-z 0-9 _ - . /")
    return value


class ToolMatch(Strict):
    tools: tuple[str, ...] = ("*",)  # globs: * any run, ? one character, [abc] a set
    when: str | None = None  # CEL over arguments, tool, agent.name
    agents: tuple[str, ...] | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            if not items:
                raise ValueError("tools must name at least one tool or glob")
            for item in items:
                if not isinstance(item, str) or not _TOOL_GLOB.match(item):
                    raise ValueError(f"tool glob {item!r} must be 1-128 of A-Z a-z 0-9 _ - . / "
                                     "and the glob characters * ? [ ]")
            return tuple(items)
        return value

    @field_validator("when")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        if value is not None:
            Condition(value)
        return value

    def names(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, glob) for glob in self.tools)


class ToolCapture(Strict):
    """The read tool whose result is the prior state."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    _name = field_validator("tool")(_tool_name)

    @model_validator(mode="after")
    def _templates(self) -> ToolCapture:
        _check_template(self.arguments, "capture.arguments")
        if "{prior." in str(self.arguments):
            raise ValueError("capture.arguments: the prior state is what capture reads; "
                             "use {arguments.NAME}")
        return self


class ToolUndo(Strict):
    """The tool that compensates, with ``prior``, ``prior_fields`` or literal arguments."""

    tool: str
    arguments: Literal["prior", "prior_fields"] | dict[str, Any]

    _name = field_validator("tool")(_tool_name)

    @model_validator(mode="after")
    def _templates(self) -> ToolUndo:
        _check_template(self.arguments, "undo.arguments")
        return self


class McpRule(Strict):
    id: str = Field(min_length=1)
    match: ToolMatch = ToolMatch()
    action: Action
    mode: Mode | None = None  # None: the file's mode
    effect: Literal["read", "write"] = "write"  # read: not journaled, not frozen
    approval: Approval | None = None
    delay: Delay | None = None
    capture: ToolCapture | Literal[False] | None = None
    undo: ToolUndo | Literal["none"] | None = None
    volatile: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> McpRule:
        check_action_extras(self.action, self.approval, self.delay)
        if self.effect == "read" and (self.capture or self.undo is not None):
            raise ValueError("effect: read calls are not journaled; capture and undo do not apply")
        if isinstance(self.undo, ToolUndo) and not isinstance(self.capture, ToolCapture):
            needs = (self.undo.arguments in ("prior", "prior_fields")
                     or "{prior." in str(self.undo.arguments))
            if needs:
                raise ValueError("undo uses the prior state, which needs a capture tool")
        return self


class McpPolicyFile(PolicyBase):
    """An MCP server (``kind: mcp``): rules over tool names and arguments."""

    kind: Literal["mcp"]
    rules: tuple[McpRule, ...] = ()

    @field_validator("credentials")
    @classmethod
    def _header_credentials(cls, value: Credentials | None) -> Credentials | None:
        if value is not None and (value.query is not None or value.aws_sigv4 is not None):
            raise ValueError("an MCP upstream takes {header, value} or basic credentials")
        return value

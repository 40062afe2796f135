"""Issue 16, item 3 for the MCP sender: an approved tool call (the gateway's own, on a
fresh session) that fails once sent is ``UpstreamLost`` / ``UpstreamTimeout`` (outcome
unknown), never ``UpstreamUnreachable`` (not sent), which only a failed connect is.
Narrow: the SDK session is replaced by one that fails on cue."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.policy.compiled import Upstream
from gateway.core.policy.schema import PolicyFile
from gateway.errors import ConnectTimeout, UpstreamLost, UpstreamTimeout, UpstreamUnreachable
from gateway.settings import Settings
from gateway.upstreams import mcp as mcp_sender


class _Session:
    def __init__(self, fails_on: str, error: BaseException) -> None:
        self.fails_on, self.error = fails_on, error
        self.sent = 0

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
        self.sent += 1
        if self.fails_on == "call":
            raise self.error
        raise AssertionError("not reached")


def _patch(monkeypatch: pytest.MonkeyPatch, session: _Session) -> None:
    class Connection:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.era = None
            self.client = session

        async def open(self, timeout: float) -> None:
            if session.fails_on == "open":
                raise session.error

        async def close(self) -> None:
            return None

    monkeypatch.setattr(mcp_sender, "_Connection", Connection)


def _upstream() -> Upstream:
    spec = PolicyFile.model_validate({"upstream": "tools", "base_url": "http://127.0.0.1:9"})
    return Upstream(spec, "tools.yaml", None, None, {}, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(("fails_on", "error", "expected"), [
    ("open", ConnectionRefusedError(), UpstreamUnreachable),
    ("open", TimeoutError(), ConnectTimeout),
    ("call", ConnectionResetError(), UpstreamLost),
    ("call", TimeoutError(), UpstreamTimeout),
])
async def test_a_tool_call_cut_off_once_sent_is_unknown(monkeypatch: pytest.MonkeyPatch,
                                                        fails_on: str, error: BaseException,
                                                        expected: type) -> None:
    session = _Session(fails_on, error)
    _patch(monkeypatch, session)
    sender = mcp_sender.McpSender(Settings(), None)  # type: ignore[arg-type]
    with pytest.raises(expected) as raised:
        await sender.call_tool(_upstream(), "refund", {"amount": 5}, 5.0)
    assert type(raised.value) is expected
    assert raised.value.maybe_sent is (fails_on == "call")
    assert session.sent == (1 if fails_on == "call" else 0)

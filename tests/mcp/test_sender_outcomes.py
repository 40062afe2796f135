"""Issue 16, item 3 for the MCP sender: an approved tool call (the gateway's own, on a
fresh session) that fails once sent is ``UpstreamLost`` / ``UpstreamTimeout`` (outcome
unknown), never ``UpstreamUnreachable`` (not sent), which only a failed connect is.
Narrow: the SDK session is replaced by one that fails on cue."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

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
    # what the SDK itself raises when the connection closes under a request: not the
    # server's answer (it was taken for one: an approved call cut off once it ran
    # was "executed" with the error "Connection closed")
    ("open", MCPError(CONNECTION_CLOSED, "Connection closed"), UpstreamUnreachable),
    ("call", MCPError(CONNECTION_CLOSED, "Connection closed"), UpstreamLost),
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


async def test_a_server_error_answer_is_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own JSON-RPC error (here: unknown tool) completed the exchange: it is
    the answer, returned as such, not a lost connection."""
    session = _Session("call", MCPError(-32602, "Unknown tool: refund"))
    _patch(monkeypatch, session)
    sender = mcp_sender.McpSender(Settings(), None)  # type: ignore[arg-type]
    answer = await sender.call_tool(_upstream(), "refund", {"amount": 5}, 5.0)
    assert answer["error"] == {"code": -32602, "message": "Unknown tool: refund"}
    assert session.sent == 1


async def test_a_read_whose_kept_connection_closed_is_tried_on_a_new_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read (the capture tool, a drift check) on the kept connection that the server
    closed meanwhile: the SDK says so with its own MCPError, and the read is tried once
    more on a new connection, as for any other failure of a kept one (it was taken for
    the server's answer: a capture that failed, "the write was not sent")."""

    class Result:
        def model_dump(self, **_: Any) -> dict[str, Any]:
            return {"content": [], "structuredContent": {"id": "c1"}}

    class Closing(_Session):
        async def call_tool(self, tool: str, arguments: dict[str, Any]) -> Any:
            self.sent += 1
            if self.sent == 1:
                raise MCPError(CONNECTION_CLOSED, "Connection closed")
            return Result()

    session = Closing("call", AssertionError())
    _patch(monkeypatch, session)
    sender = mcp_sender.McpSender(Settings(), None)  # type: ignore[arg-type]
    answer = await sender.call_tool(_upstream(), "get_customer", {"id": "c1"}, 5.0, fresh=False)
    assert answer["result"]["structuredContent"] == {"id": "c1"}
    assert session.sent == 2

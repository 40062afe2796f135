"""The agent connection (gateway.proxy.connection): its one write per whole answer,
what the transport is asked to send, write by write; and its link to the pipeline."""

from __future__ import annotations

from typing import Any

from gateway.proxy.connection import _Link, _OneWrite


class Recorded:
    """A transport that keeps each call: one entry per write the kernel would see."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", b"".join(parts)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def test_a_held_head_leaves_with_its_body_in_one_write() -> None:
    transport = Recorded()
    one = _OneWrite(transport)  # type: ignore[arg-type]
    one.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # nothing held: straight through
    one.hold_head()
    one.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.calls == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]
    one.write(b"body")
    one.write(b"next")
    assert transport.calls[1:] == [("writelines", b"HTTP/1.1 200 OK\r\n\r\nbody"),
                                   ("write", b"next")]
    assert one.get_extra_info("peername") == "info peername"


def test_a_head_with_no_body_write_is_sent_on_flush_or_close() -> None:
    transport = Recorded()
    one = _OneWrite(transport)  # type: ignore[arg-type]
    one.hold_head()
    one.write(b"HEAD's head")
    one.flush()  # the response is complete (a HEAD): GuardedProtocol flushes
    one.flush()
    assert transport.calls == [("write", b"HEAD's head")]
    one.hold_head()
    one.write(b"head")
    one.close()
    assert transport.calls[1:] == [("write", b"head"), ("close", b"")]
    one.hold_head()
    one.write(b"after close")
    one.flush()  # a closed transport is not written to
    assert transport.calls[3:] == []


def test_the_link_calls_back_once_when_the_connection_closes() -> None:
    transport = Recorded()
    link = _Link(transport)  # type: ignore[arg-type]
    heard: list[str] = []
    link.on_close(lambda: heard.append("kept"))
    forget = link.on_close(lambda: heard.append("taken back"))
    link.on_close(lambda: 1 / 0)  # type: ignore[func-returns-value]  # logged, not raised
    forget()
    forget()  # twice: nothing
    assert not link.closed() and heard == []
    transport.closing = True
    link.lost()
    link.lost()  # once
    assert link.closed() and heard == ["kept"]
    link.on_close(lambda: heard.append("already closed"))  # at once
    assert heard == ["kept", "already closed"]

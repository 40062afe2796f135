"""A TCP proxy in front of a real server that cuts one exchange off after it landed.

Bytes go both ways untouched until a request carrying ``marker`` (say, the name of an
MCP tool in a ``tools/call``) has been passed on; then the server's answer to it is
swallowed: as soon as its first bytes arrive (so the server has handled the request),
both connections are closed. The client sees its connection lost with no answer, the
server has applied the call: the fault-matrix cell "request sent, connection lost before
the head", against a server the test does not script (a real MCP server)::

    with Cutter("127.0.0.1", port, b'"update_customer"') as cutter:
        ... point the gateway at cutter.url ...
        assert cutter.cut.wait(30)

It runs its own asyncio loop in a thread, as ``FaultyUpstream`` does; ``cut`` is set
once the exchange was cut off, ``passed`` counts the requests carrying the marker.
``hold=True`` swallows the answer but keeps both connections open: the client waits
for an answer that never comes (the call landed), until it gives up or is killed.
"""

from __future__ import annotations

import asyncio
import threading


class Cutter:
    def __init__(self, host: str, port: int, marker: bytes, times: int = 1,
                 hold: bool = False, skip: int = 0) -> None:
        self.target = (host, port)
        self.marker = marker
        self.skip = skip  # exchanges carrying the marker passed untouched first
        self.times = times  # exchanges to cut off after those; later ones pass
        self.hold = hold  # swallow the answer without closing the connections
        self.passed = 0  # requests carrying the marker that reached the server
        self.cut = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Cutter:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        cutting = asyncio.Event()  # the request to cut off was passed on

        async def upward() -> None:
            seen = b""
            while data := await client_reader.read(65536):
                seen = (seen + data)[-65536:]
                if self.marker in seen and not cutting.is_set():
                    self.passed += 1
                    seen = b""
                    if self.skip < self.passed <= self.skip + self.times:
                        cutting.set()
                server_writer.write(data)
                await server_writer.drain()

        async def downward() -> None:
            while data := await server_reader.read(65536):
                if cutting.is_set():  # the server has handled it: swallow, close both
                    self.cut.set()
                    if self.hold:
                        continue  # ... or only swallow, until a side closes
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(upward()), asyncio.ensure_future(downward())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except Exception:  # noqa: BLE001 - a broken side ends the pair
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_writer, server_writer):
                writer.close()

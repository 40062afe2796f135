"""Run a raw ASGI app under uvicorn (uvloop + httptools) on 127.0.0.1, port 0.

Prints ``ready port=N`` once the socket listens, so bench/run.py can find it.
Same uvicorn settings as the gateway (no access log, no Server/Date headers).
"""
from __future__ import annotations

import socket
from typing import Any

import uvicorn


def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off",
                            access_log=False, log_level="warning",
                            server_header=False, date_header=False)
    print(f"ready port={sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])

"""``python -m gateway.demo [--host H] [--port P] [--token T] [--empty] [--stateless] [--json]``:
run the demo CRM (REST, and its tools over MCP at ``/mcp``)."""

from __future__ import annotations

import argparse

from gateway.demo.mcp import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo",
                                     description="Run the demo CRM API (in memory).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' on every API call")
    parser.add_argument("--empty", action="store_true", help="start without the seed data")
    parser.add_argument("--stateless", action="store_true",
                        help="MCP at /mcp without sessions (no Mcp-Session-Id)")
    parser.add_argument("--json", action="store_true",
                        help="MCP answers as JSON rather than SSE streams")
    args = parser.parse_args(argv)
    serve(args.host, args.port, token=args.token, seed=not args.empty,
          stateless=args.stateless, json_response=args.json)


if __name__ == "__main__":
    main()

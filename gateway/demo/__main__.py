"""``python -m gateway.demo [--host H] [--port P] [--token T] [--empty]``: run the demo CRM."""

from __future__ import annotations

import argparse

from gateway.demo.crm import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo",
                                     description="Run the demo CRM API (in memory).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' on every API call")
    parser.add_argument("--empty", action="store_true", help="start without the seed data")
    args = parser.parse_args(argv)
    serve(args.host, args.port, token=args.token, seed=not args.empty)


if __name__ == "__main__":
    main()

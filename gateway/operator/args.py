"""Argument types and the flags every operator command takes."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from gateway.operator.client import ADMIN_URL_ENV, DEFAULT_ADMIN_URL


def _int_at_least(text: str, minimum: int, problem: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{problem}: {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "must not be negative")


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
TIME_HELP = "ISO-8601, or 30s, 15m, 2h, 1d ago"


def moment(text: str) -> str:
    """``15m``, ``2h``, ``1d`` mean that long ago; anything else goes as is (ISO-8601)."""
    match = _DURATION.match(text.strip())
    if match is None:
        return text
    delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    return (datetime.now(UTC) - delta).isoformat(timespec="seconds").replace("+00:00", "Z")


def common_flags(*, json: bool = True, inherit: bool = False) -> argparse.ArgumentParser:
    """``--admin-url`` (and ``--json``) as a parent parser.

    ``inherit``: for a sub-command whose parent command takes the same flags, so
    ``gateway rollback --json show ID`` keeps the ``--json`` given before ``show``.
    """
    default = argparse.SUPPRESS if inherit else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url", default=default,
                        help=f"admin API base URL (default: ${ADMIN_URL_ENV} or {DEFAULT_ADMIN_URL})")
    if json:
        common.add_argument("--json", action="store_true",
                            default=argparse.SUPPRESS if inherit else False,
                            help="print the API's JSON instead of a table")
    return common

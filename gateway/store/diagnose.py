"""Why a store could not be opened, in one line that names it (password hidden).

``explain(error, url)`` turns what the drivers raise at start (a refused
connection, a database that does not exist, a login refused, an SQLite file
that cannot be opened) into a sentence an operator can act on; None for
anything else, which is a bug to show with its traceback. ``sqlite_location``
checks an SQLite path before the file is created: a database is never
created in a directory that does not exist (a mistyped path must not start a
new, empty journal unnoticed).

>>> safe_url("postgresql+asyncpg://gw:s3cret@db:5432/gw")
'postgresql+asyncpg://gw:***@db:5432/gw'
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as NoConnection  # a pool's wait for its turn

from gateway.core.redact import is_secret_name
from gateway.store.engine import (
    NoPrimary,
    driver_errors,
    is_postgres,
    parse_url,
    read_url,
    sqlite_path,
)


def safe_url(database_url: str | URL) -> str:
    """The URL to show: its password hidden, in the user part or in the query (asyncpg
    takes ``?password=``, libpq ``sslpassword``: any secret-named parameter).

    >>> safe_url("postgresql://gw@h1,h2/gw?password=s3cret")
    'postgresql://gw@/gw?host=h1%3A5432&host=h2%3A5432&password=***'
    """
    url = read_url(database_url) if isinstance(database_url, str) else database_url
    hidden = {name: _HIDDEN for name in url.query if is_secret_name(name)}
    shown = url.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace(_HIDDEN, "***")  # as the user part's (a query would encode it)


_HIDDEN = "gateway-hidden-value"


def sqlite_location(database_url: str) -> tuple[Path, bool] | None:
    """``(path, exists)`` of an SQLite store, None for PostgreSQL.

    ValueError when the directory does not exist, or the path names a directory.
    """
    url = parse_url(database_url)
    if is_postgres(url):
        return None
    path = sqlite_path(url)
    if path.is_dir():
        raise ValueError(f"database_url {safe_url(url)} names the directory {path}, not a "
                         "database file")
    if not path.parent.is_dir():
        raise ValueError(f"the directory {path.parent.resolve()} of the SQLite database "
                         f"{path} does not exist (database_url {safe_url(url)}): create it, or "
                         "correct the path")
    return path, path.exists()


def _causes(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return seen


def _refused(cause: BaseException) -> bool:
    return isinstance(cause, ConnectionRefusedError) or isinstance(cause, OSError) and (
        cause.errno == errno.ECONNREFUSED or "Connect call failed" in str(cause))


def explain(error: BaseException, database_url: str) -> str | None:
    url = read_url(database_url)
    where = safe_url(url)
    if is_postgres(parse_url(database_url)):
        import asyncpg

        hosts = url.query.get("host")
        server = (",".join(hosts) if isinstance(hosts, tuple)
                  else f"{url.host or 'localhost'}:{url.port or 5432}")
        for cause in _causes(error):
            if isinstance(cause, NoPrimary):  # several hosts: refused by all, or say each
                if cause.errors and all(_refused(e) for e in cause.errors):
                    return (f"cannot connect to the database {where}: connection refused "
                            f"(is PostgreSQL running on {server}?)")
                return f"cannot connect to the database {where}: {cause}"
            if isinstance(cause, asyncpg.InvalidCatalogNameError):
                return (f"the database {url.database!r} does not exist on the PostgreSQL server "
                        f"{server} ({where}): create it (createdb {url.database}) or correct "
                        "database_url")
            if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError |
                          asyncpg.InvalidPasswordError):
                return f"the PostgreSQL server {server} refused the login ({where}): {cause}"
            if isinstance(cause, socket.gaierror):
                return f"cannot resolve the database host {url.host!r} ({where})"
            if _refused(cause):
                return (f"cannot connect to the database {where}: connection refused (is "
                        f"PostgreSQL running on {server}?)")
            if isinstance(cause, TimeoutError):
                return f"cannot connect to the database {where}: timed out"
            if isinstance(cause, asyncpg.PostgresError):
                return f"the database {where} answered: {cause}"
        return None
    for cause in _causes(error):
        if isinstance(cause, sqlite3.DatabaseError | OSError):
            return f"cannot open the SQLite database {sqlite_path(url)} ({where}): {cause}"
    return None


def store_errors(database_url: str) -> tuple[type[BaseException], ...]:
    """What a running store raises when it cannot be reached: the base classes an HTTP
    edge catches to answer 503 (``unavailable`` then says whether it is that, and why)."""
    return (OSError, sqlite3.Error, NoConnection, *driver_errors(parse_url(database_url)).any)


def unavailable(exc: BaseException, database_url: str) -> str | None:
    """Why the store cannot answer now (it is down, restarting, unreachable, locked), in
    one line; None when ``exc`` is not that (a bug: shown with its traceback)."""
    down: tuple[type[BaseException], ...] = (
        OSError, *driver_errors(parse_url(database_url)).connection, sqlite3.OperationalError,
        NoConnection)
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 5:  # SQLAlchemy wraps the driver's error
        if isinstance(cause, DBAPIError) and cause.orig is not None:
            cause = cause.orig
        if isinstance(cause, down):
            return f"{type(cause).__name__}: {cause}".strip().rstrip(":")
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return str(cause).splitlines()[0]
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None

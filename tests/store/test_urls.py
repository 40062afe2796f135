"""Database URLs: several PostgreSQL hosts (the libpq form), and the primary asked for."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store.diagnose import safe_url
from gateway.store.engine import asyncpg_dsn, parse_url

CASES = [
    ("postgresql+asyncpg://gw:s3cret@h1:5432,h2:5433/gw",
     "postgresql://gw:s3cret@h1:5432,h2:5433/gw?target_session_attrs=read-write"),
    ("postgresql://gw@h1,h2/gw",  # a host without a port: 5432, as libpq
     "postgresql://gw@h1:5432,h2:5432/gw?target_session_attrs=read-write"),
    ("postgresql://h1:1,h2:2/gw?ssl=disable",
     "postgresql://h1:1,h2:2/gw?ssl=disable&target_session_attrs=read-write"),
    ("postgresql+asyncpg://gw@db/gw", "postgresql://gw@db/gw?target_session_attrs=read-write"),
    ("postgresql://gw@h1:1,h2:2/gw?target_session_attrs=any",  # the URL's own choice stays
     "postgresql://gw@h1:1,h2:2/gw?target_session_attrs=any"),
]


@pytest.mark.parametrize(("url", "dsn"), CASES)
def test_asyncpg_gets_every_host_and_asks_for_the_primary(url: str, dsn: str) -> None:
    assert asyncpg_dsn(parse_url(url)) == dsn


def test_sqlalchemy_gets_the_host_list_and_the_session_attributes() -> None:
    engine = create_async_engine(parse_url("postgresql://gw:pw@h1:5432,h2:5433/gw"))
    _, options = engine.dialect.create_connect_args(engine.url)
    assert (options["host"], options["port"]) == (["h1", "h2"], [5432, 5433])
    assert options["target_session_attrs"] == "read-write"


def test_the_password_stays_hidden_with_several_hosts() -> None:
    shown = safe_url("postgresql+asyncpg://gw:s3cret@h1:5432,h2:5432/gw")
    assert "s3cret" not in shown and "h1" in shown and "h2" in shown


def test_an_empty_host_in_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="empty host"):
        parse_url("postgresql://gw@h1:5432,:5433/gw")


def test_sqlite_urls_are_untouched() -> None:
    assert parse_url("sqlite:///./gateway.db").render_as_string() == \
        "sqlite+aiosqlite:///./gateway.db"

"""Issue 10: startup and settings errors name what failed, in one line each: the port,
the database (password hidden), the file and the key. Real ``gateway`` processes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_SERVER
from tests.e2e.procs import run_gateway, start_gateway, write_settings
from tests.external import missing
from tests.harness import CRM_RULES, policy_text


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm.yaml").write_text(policy_text("http://127.0.0.1:9", CRM_RULES))
    return write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(result: object) -> str:
    """The process failed with exactly one line on stderr (no traceback), which is returned."""
    assert result.returncode == 1, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return str(lines[0])


def test_address_in_use_names_the_port(config: Path, taken_port: int) -> None:
    line = one_line(run_gateway("serve", "--config", str(config), "--port", str(taken_port)))
    assert line == (f"gateway: cannot listen on 127.0.0.1:{taken_port} for the proxy listener "
                    "(--port): address already in use (another process has it: stop it, or "
                    "choose another port)")
    line = one_line(run_gateway("serve", "--config", str(config), "--admin-port",
                                str(taken_port)))
    assert line.startswith(f"gateway: cannot listen on 127.0.0.1:{taken_port} for the admin "
                           "listener (--admin-port): address already in use")


def test_connection_refused_names_the_database_without_its_password(config: Path) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://gw:s3cret-pw@127.0.0.1:{port}/gateway"
    line = one_line(run_gateway("serve", "--config", str(config), "--database-url", url))
    assert line == (f"gateway: cannot connect to the database postgresql+asyncpg://gw:***@"
                    f"127.0.0.1:{port}/gateway: connection refused (is PostgreSQL running on "
                    f"127.0.0.1:{port}?)")


def test_a_password_in_the_urls_query_stays_hidden(config: Path) -> None:
    """asyncpg takes the password from the query too (``?password=``), and with several
    hosts the URL is shown with its hosts in the query: that password is hidden as well."""
    port, other = free_port(), free_port()
    for url, shown in [
        (f"postgresql+asyncpg://gw@127.0.0.1:{port}/gateway?password=s3cret-pw",
         f"postgresql+asyncpg://gw@127.0.0.1:{port}/gateway?password=***"),
        (f"postgresql+asyncpg://gw@127.0.0.1:{port},127.0.0.1:{other}/gateway"
         "?sslpassword=s3cret-pw",
         f"postgresql+asyncpg://gw@/gateway?host=127.0.0.1%3A{port}&host=127.0.0.1%3A{other}"
         "&sslpassword=***"),
    ]:
        line = one_line(run_gateway("serve", "--config", str(config), "--database-url", url))
        assert "s3cret-pw" not in line
        assert f"cannot connect to the database {shown}: connection refused" in line, line


def test_a_database_url_that_is_not_one_is_named_without_its_password(config: Path) -> None:
    line = one_line(run_gateway("serve", "--config", str(config), "--database-url",
                                "mysql://gw:s3cret-pw@db/gateway"))
    assert line.startswith("flag --database-url: database_url: not a database URL"), line
    assert "s3cret-pw" not in line


async def test_a_missing_postgresql_database_is_one_line(config: Path) -> None:
    try:
        connection = await asyncpg.connect(POSTGRES_SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        missing(f"PostgreSQL at {POSTGRES_SERVER} unreachable ({error!r})")
    await connection.close()
    name = f"gw_missing_{uuid.uuid4().hex[:8]}"
    url = POSTGRES_SERVER.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    line = one_line(run_gateway("serve", "--config", str(config), "--database-url",
                                f"{url}/{name}"))
    server = make_url(POSTGRES_SERVER)
    where = f"{server.host}:{server.port or 5432}"
    shown = make_url(f"{url}/{name}").render_as_string(hide_password=True)
    assert line.startswith(f"gateway: the database '{name}' does not exist on the PostgreSQL "
                           f"server {where} ({shown.rsplit('/', 1)[0]}/")
    assert line.endswith(f"): create it (createdb {name}) or correct database_url")


def test_a_mistyped_sqlite_directory_is_refused(config: Path, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/gw.db"
    line = one_line(run_gateway("serve", "--config", str(config), "--database-url", url))
    assert line == (f"gateway: the directory {tmp_path}/no-such-dir of the SQLite database "
                    f"{tmp_path}/no-such-dir/gw.db does not exist (database_url {url}): "
                    "create it, or correct the path")
    assert not (tmp_path / "no-such-dir").exists()


def test_a_new_sqlite_store_is_announced(config: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    gateway = start_gateway(config, "--database-url", f"sqlite+aiosqlite:///{fresh}")
    gateway.stop()
    assert any(f"created a new, empty store at {fresh}" in line for line in gateway.output)
    again = start_gateway(config, "--database-url", f"sqlite+aiosqlite:///{fresh}")
    again.stop()
    assert not any("created a new" in line for line in again.output)  # the same store


def test_settings_errors_name_the_file_and_each_key(config: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["proxy"]["port"] = "eighty"
    data["agents"][0]["key_sha256"] = "not-hex"
    data["operators"][0]["token_sha256"] = "abc"
    data["proxi"] = {"port": 1}
    config.write_text(yaml.safe_dump(data))
    result = run_gateway("serve", "--config", str(config))
    assert result.returncode == 1 and result.stdout == ""
    assert sorted(result.stderr.splitlines()) == [
        f"{config}: agents[0].key_sha256: key_sha256 must be 64 hex digits, the sha256 of the "
        "secret (gateway hash SECRET)",
        f"{config}: operators[0].token_sha256: token_sha256 must be 64 hex digits, the sha256 of "
        "the secret (gateway hash SECRET)",
        f"{config}: proxi: unknown setting (did you mean 'proxy'?)",
        f"{config}: proxy.port: Input should be a valid integer, unable to parse string as an "
        "integer (got 'eighty')",
    ]
    assert "validation error" not in result.stderr and "Layered" not in result.stderr


def test_a_bad_flag_value_names_the_flag(config: Path) -> None:
    line = one_line(run_gateway("serve", "--config", str(config), "--admin-port", "70000"))
    assert line == ("flag --admin-port: admin.port: Input should be less than or equal to "
                    "65535 (got 70000)")


def test_relative_policies_dir_is_taken_from_the_settings_file(config: Path,
                                                               tmp_path: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["policies_dir"] = "./policies"  # next to the file, not the current directory
    config.write_text(yaml.safe_dump(data))
    (tmp_path / "policies" / "crm.yaml").write_text(
        policy_text("http://127.0.0.1:9", CRM_RULES, upstream="only-here"))
    assert Path.cwd() != tmp_path
    gateway = start_gateway(config)  # from the tests' directory, where ./policies is not this
    gateway.stop()
    assert any("policy set" in line and "loaded: only-here" in line for line in gateway.output)


def test_help_names_every_command() -> None:
    result = run_gateway("--help")
    assert result.returncode == 0
    description = result.stdout.split("positional arguments")[0]
    for command in ("serve", "demo", "drill", "policy", "hash", "approvals", "killswitch",
                    "journal", "rollback", "audit"):
        assert f"\n  {command} " in description, command


def test_flag_placeholders_are_the_users_words() -> None:
    result = run_gateway("serve", "--help")
    assert "__" not in result.stdout and "POLICIES_DIR" not in result.stdout
    for placeholder in ("--config FILE", "--policies DIR", "--host HOST", "--port PORT",
                        "--admin-host HOST", "--admin-port PORT", "--database-url URL"):
        assert placeholder in result.stdout

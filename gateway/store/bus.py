"""Messages between the gateway processes that share one store.

The kill switch pushes every engage to every process and collects their
answers over this bus; nothing on the write path reads it. Two transports,
one per backend, both "every process on the store hears every message":

- ``PgBus``: PostgreSQL ``LISTEN``/``NOTIFY`` on channel ``gateway_bus``. Each
  process keeps one listening connection whose ``application_name`` is
  ``gateway-bus <member>``, so the members are the sessions of that name in
  ``pg_stat_activity`` (a process that dies drops its session and leaves).
- ``SocketBus``: SQLite has no NOTIFY, and the processes sharing a SQLite
  file share a host. Each binds a Unix datagram socket in a private (0700)
  directory, and a message is one datagram to each socket there. A socket
  nobody reads (its process died) refuses the datagram and is removed. The
  directory has a random name (``mkdtemp``: socket paths must stay short, so
  not beside the database); the symlink ``.<database>.bus`` beside the database
  names it, made and followed under a lock (``.<database>.bus.lock``; hidden,
  and not named like the database's own files, which backups copy by prefix). A
  directory, or link, that is not this user's alone is refused, never used:
  another local user cannot pre-create it, read it, or speak into it.

Whoever can reach a bus can forge a message on it (on PostgreSQL, any role
with CONNECT can ``pg_notify``): messages are hints, and the kill switch
re-reads the store on each (``services.killswitch``).

A message is a small JSON object; ``from`` is added, and ``to`` names the one
member a reply is for (the others drop it).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.deadline import within
from gateway.store.engine import connect_primary

if TYPE_CHECKING:  # imported when a PostgreSQL store connects: SQLite never loads it
    import asyncpg

log = logging.getLogger("gateway.bus")
Deliver = Callable[[dict[str, Any]], None]
CHANNEL = "gateway_bus"
WARM_CHANNEL = "gateway_warm_up"  # no one listens on it
_NOTIFY = "SELECT pg_notify($1, $2)"
APP_PREFIX = "gateway-bus "
SESSION_PREFIX = "gateway "  # the hot path's sessions of a process (``PostgresHotPath``)
RECONNECT_GRACE = 10.0  # seconds after a server change before a process is taken for gone
MAX_PAYLOAD = 7900  # NOTIFY's limit is 8000 bytes
AT_COMMIT_MARGIN = 200  # bytes the store may add to a message sent at its commit
PUBLISH_TIMEOUT = 1.0  # seconds a message may wait on the listening connection


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _decode(data: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


_LISTENING: type[Any] | None = None


def _listening() -> type[Any]:
    """The listening connection's class: a message on the bus is delivered in the step
    that reads it, where asyncpg schedules each listener one loop iteration later (with
    ``call_soon``): under load that iteration is the CPU of every request the loop
    serves, and an engage waits for the other processes to hear it and answer. Only
    ``CHANNEL`` is delivered so (by ``heard``, set once the connection is made); the
    rest, as asyncpg does. Notifications are parsed in any state of the connection, and
    what ``heard`` sends on it waits for ``PgBus._using`` like any statement."""
    global _LISTENING
    if _LISTENING is None:
        import asyncpg

        class Listening(asyncpg.Connection):  # type: ignore[misc]
            heard: Callable[[str], None] | None = None

            def _process_notification(self, pid: int, channel: str, payload: str) -> None:
                heard = self.heard
                if heard is not None and channel == CHANNEL:
                    heard(payload)
                else:
                    super()._process_notification(pid, channel, payload)
        _LISTENING = Listening
    return _LISTENING


class PgBus:
    def __init__(self, dsn: str, pool: asyncpg.Pool, member: str) -> None:
        self.member = member
        self._dsn = dsn
        self._pool = pool
        self._listener: asyncpg.Connection | None = None
        self._deliver: Deliver | None = None
        self._using = asyncio.Lock()  # one statement at a time on the listening connection
        self._server: str | None = None  # the server ``gone`` last asked, and from when on
        self._trust_from = 0.0  # (monotonic) its sessions tell who is gone

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._connect()

    async def _connect(self) -> None:
        # Keepalives: a member whose host vanished leaves pg_stat_activity within
        # ~25 s instead of hours, so engages stop waiting engage_wait for it.
        settings = {"application_name": APP_PREFIX + self.member, "tcp_keepalives_idle": "10",
                    "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
        connection = await connect_primary(self._dsn, connection_class=_listening(),
                                           server_settings=settings)
        try:
            connection.heard = self._heard
            await connection.add_listener(CHANNEL, self._notified)
            # The statement ``publish`` sends, prepared now: the first answer to an
            # engage otherwise paid its Parse round trip (a NOTIFY on a channel nobody
            # listens to; the bus's own could wake the others).
            await connection.execute(_NOTIFY, WARM_CHANNEL, "")
        except BaseException:
            await connection.close()
            raise
        self._listener = connection

    def _heard(self, payload: str) -> None:
        """A message, delivered as it is read (``_listening``); never raises into the
        driver's read of the connection."""
        try:
            self._notified(None, 0, CHANNEL, payload)
        except Exception:
            log.exception("bus: delivering a message failed")

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        message = _decode(payload)
        if message is None or message.get("from") == self.member:
            return
        if message.get("to") not in (None, self.member):
            return
        if self._deliver is not None:
            self._deliver(message)

    async def publish(self, message: dict[str, Any], to: str | None = None) -> None:
        payload = _encode({**message, "from": self.member, "to": to})
        if len(payload.encode()) > MAX_PAYLOAD:
            raise ValueError(f"bus message of {len(payload)} bytes is over NOTIFY's limit")
        # On the listening connection, which nothing else queues on: the pool is the
        # journal's, and under load an engage's message (or a process's answer to
        # one) waited there for a connection behind the writes it is about to stop
        # (measured: tens of ms at p99 on the bench). The pool only when that
        # connection is down (``check`` brings it back).
        # Bounded: a wedged connection must not hold an engage (which then goes on
        # without the others' answers, as when a publish fails); ``check`` replaces it.
        import asyncpg

        listener = self._listener
        if listener is not None and not listener.is_closed():
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT), self._using:
                    await listener.execute(_NOTIFY, CHANNEL, payload)
                return
            except (OSError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError):
                pass
        await self._pool.execute(_NOTIFY, CHANNEL, payload)

    def at_commit(self, message: dict[str, Any]) -> tuple[str, str] | None:
        """The NOTIFY the store sends with a commit (an engage's announcement): the
        others hear it when the freeze is committed, with no round trip after it.
        None when it would be too long (then it is published, and refused, as usual);
        the store may add a few fields, so a margin is kept."""
        payload = _encode({**message, "from": self.member, "to": None})
        if len(payload.encode()) > MAX_PAYLOAD - AT_COMMIT_MARGIN:
            return None
        return CHANNEL, payload

    async def members(self) -> set[str]:
        rows = await self._pool.fetch(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE $1",
            APP_PREFIX + "%")
        return {row[0][len(APP_PREFIX):] for row in rows} - {self.member}

    async def gone(self, members: set[str]) -> set[str]:
        """Of ``members``, those with no session left on the database: neither the bus's
        listening one nor any of the hot path's (a process that dies drops them all).
        None for ``RECONNECT_GRACE`` seconds after the server changed (a restart, a
        failover): every process lost its sessions then, and the live ones are still
        connecting again."""
        names = [APP_PREFIX + m for m in members] + [SESSION_PREFIX + m for m in members]
        server, found = await self._pool.fetchrow(
            "SELECT pg_postmaster_start_time()::text || ' ' || "
            "coalesce(inet_server_addr()::text, ''), array(SELECT DISTINCT application_name "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = ANY($1::text[]))", names)
        now = time.monotonic()
        if self._server is not None and server != self._server:
            self._trust_from = now + RECONNECT_GRACE
        self._server = server
        if now < self._trust_from:
            return set()
        alive = {name.removeprefix(APP_PREFIX).removeprefix(SESSION_PREFIX) for name in found}
        return members - alive

    async def check(self) -> None:
        """Keep the listening session alive: reconnect (and listen again) when it is lost.

        Messages sent while it was down are lost; the kill switch's generation
        (read at every heartbeat) catches what they carried.
        """
        import asyncpg

        listener = self._listener
        if listener is not None and not listener.is_closed():
            try:
                async with self._using:
                    await within(listener.execute("SELECT 1"), 5)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                listener.terminate()
        self._listener = None
        await self._connect()
        log.warning("bus: listening again on %s after the connection was lost", CHANNEL)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            await listener.close()


class SocketBus:
    def __init__(self, database: Path, member: str) -> None:
        self.member = member
        self._link = database.with_name(f".{database.name}.bus")
        self._lock = database.with_name(f".{database.name}.bus.lock")
        self.directory = self._link  # the directory it names, once started
        self._socket: socket.socket | None = None
        self._deliver: Deliver | None = None

    def _path(self, member: str) -> str:
        return str(self.directory / f"{member}.sock")

    def _locked(self) -> int:
        """The lock that orders finding, making and removing the directory (blocks
        for as long as another process takes to bind or unbind: microseconds)."""
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _directory(self) -> Path:
        """The directory the link names; a new private one if it names none."""
        try:
            link = os.lstat(self._link)
        except FileNotFoundError:
            link = None
        if link is not None:
            if not stat.S_ISLNK(link.st_mode) or link.st_uid != os.getuid():
                raise PermissionError(f"{self._link} is not a symlink of this user's: refusing "
                                      "to use it as the kill switch's bus (remove it)")
            target = Path(os.readlink(self._link))
            try:
                info = os.lstat(target)
            except FileNotFoundError:
                info = None  # removed (a tmp cleaner, a reboot): make another
            if info is not None:
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
                        or stat.S_IMODE(info.st_mode) & 0o077:
                    raise PermissionError(
                        f"{target} (named by {self._link}) is not a directory private to this "
                        "user (0700): another user could speak for the kill switch; refusing")
                return target
        created = Path(tempfile.mkdtemp(prefix="gateway-bus-"))  # 0700, unpredictable
        staged = self._link.with_name(f"{self._link.name}.{self.member}")
        staged.unlink(missing_ok=True)
        os.symlink(created, staged)
        os.replace(staged, self._link)
        return created

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        lock = self._locked()
        try:
            self.directory = self._directory()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(self._path(self.member))
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        finally:
            os.close(lock)
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self._socket is not None
        while True:
            try:
                data = self._socket.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.exception("bus: receiving failed")
                return
            message = _decode(data) if data else None  # an empty datagram is a probe
            if message is None or message.get("to") not in (None, self.member):
                continue
            if self._deliver is not None:
                self._deliver(message)

    def _send(self, member: str, data: bytes) -> bool:
        """False when nobody reads that socket any more (it is removed)."""
        assert self._socket is not None
        try:
            self._socket.sendto(data, self._path(member))
        except (ConnectionRefusedError, FileNotFoundError):
            Path(self._path(member)).unlink(missing_ok=True)
            return False
        except BlockingIOError:  # its queue is full: that process is not reading
            log.warning("bus: process %s is not reading its messages", member)
        return True

    def _others(self) -> list[str]:
        return [p.name[:-5] for p in self.directory.glob("*.sock") if p.name[:-5] != self.member]

    async def publish(self, message: dict[str, Any], to: str | None = None) -> None:
        data = _encode({**message, "from": self.member, "to": to}).encode()
        for member in [to] if to is not None else self._others():
            self._send(member, data)

    def at_commit(self, message: dict[str, Any]) -> tuple[str, str] | None:
        """None: no database sends a datagram (the caller publishes)."""
        return None

    async def members(self) -> set[str]:
        return {member for member in self._others() if self._send(member, b"")}

    async def gone(self, members: set[str]) -> set[str]:
        """Of ``members``, those whose socket nobody reads: their process died."""
        return members - await self.members() - {self.member}

    async def check(self) -> None:
        """Bind again if our socket file was removed (a tmp cleaner, say)."""
        if self._socket is not None and os.path.exists(self._path(self.member)):
            return
        deliver = self._deliver
        await self.close()
        if deliver is not None:
            await self.start(deliver)
            log.warning("bus: socket %s bound again", self._path(self.member))

    async def close(self) -> None:
        if self._socket is None:
            return
        await self.members()  # on the way out, remove the sockets of processes that died
        sock, self._socket = self._socket, None
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        try:
            lock = self._locked()
        except OSError:  # the database's directory became read-only: leave the rest
            Path(self._path(self.member)).unlink(missing_ok=True)
            return
        try:
            Path(self._path(self.member)).unlink(missing_ok=True)
            try:
                self.directory.rmdir()  # the last one out
            except OSError:
                return
            if os.path.islink(self._link) and Path(os.readlink(self._link)) == self.directory:
                self._link.unlink()
        finally:
            os.close(lock)

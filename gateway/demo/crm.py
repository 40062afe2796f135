"""A tiny CRM-like JSON API: the upstream of the README walkthrough, the drills and the tests.

It is a raw ASGI application over two in-memory collections, ``/customers``
and ``/deals``, with just enough realism for the gateway to have something to
guard and to roll back: server-assigned ids, ``updated_at`` on every write,
``ETag`` (with ``If-Match``), a ``Location`` on create, form-encoded bodies and
an optional bearer token. ``POST`` to a collection with a free ``id`` in the
body recreates exactly that resource, which is how the gateway undoes a
``DELETE``. The ``/_demo`` endpoints serve tests and health checks; they need
no token and are not logged: ``GET /_demo/requests`` (what reached this
server, oldest first), ``POST /_demo/reset`` (back to the seed, log cleared)
and ``GET /_demo/health``.

>>> app = create_app(token="s3cret")   # requests without "Bearer s3cret" get 401
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIXES = {"customers": "cus", "deals": "deal"}
SERVER_FIELDS = ("id", "updated_at")  # set by the server, never taken from a body
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_BODY = 1 << 20

SEED: dict[str, list[dict[str, Any]]] = {
    "customers": [
        {"id": "cus_1", "name": "Ada Lovelace", "email": "ada@example.com",
         "plan": "pro", "balance": 1200},
        {"id": "cus_2", "name": "Grace Hopper", "email": "grace@example.com",
         "plan": "enterprise", "balance": 0},
        {"id": "cus_3", "name": "Alan Turing", "email": "alan@example.com",
         "plan": "free", "balance": 50},
    ],
    "deals": [
        {"id": "deal_1", "customer_id": "cus_1", "title": "Analytical Engine support",
         "amount": 4800, "stage": "proposal"},
        {"id": "deal_2", "customer_id": "cus_2", "title": "COBOL migration",
         "amount": 25000, "stage": "negotiation"},
    ],
}


class DemoError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etag(obj: dict[str, Any]) -> str:
    """A strong validator: the hash of the object's canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


class CRM:
    """The ASGI app. State lives on the instance; ``reset()`` returns to the start."""

    def __init__(self, seed: bool = True, token: str | None = None) -> None:
        self.seeded = seed
        self.token = token
        self.log: list[dict[str, Any]] = []
        self._last = datetime.min.replace(tzinfo=UTC)
        self.reset()

    def reset(self) -> None:
        self.log.clear()
        stamp = self._now()
        self.data: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in PREFIXES}
        self.counters = dict.fromkeys(PREFIXES, 0)
        for name, items in (SEED.items() if self.seeded else ()):
            for item in items:
                self.data[name][item["id"]] = {**item, "updated_at": stamp}
            self.counters[name] = len(items)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        try:
            body = await _read_body(receive)
            status, payload, extra = self.handle(method, path, scope.get("query_string", b""),
                                                 headers, body)
        except DemoError as exc:
            status, extra = exc.status, exc.headers
            payload = {"error": {"code": exc.code, "message": exc.message}}
        await _respond(send, status, payload, extra, head=method == "HEAD")

    # -- routing ---------------------------------------------------------------

    def handle(self, method: str, path: str, query: bytes, headers: dict[str, str],
               body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["_demo"]:
            return self._demo(method, parts[1:])
        self.log.append({"method": method, "path": path, "query": query.decode("latin-1"),
                         "headers": headers, "body": body.decode("utf-8", "replace")})
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            raise DemoError(401, "unauthorized", "missing or wrong bearer token",
                            {"www-authenticate": 'Bearer realm="demo-crm"'})
        if not parts or parts[0] not in PREFIXES or len(parts) > 2:
            raise DemoError(404, "not_found", f"no route for {path}")
        collection = parts[0]
        if len(parts) == 1:
            if method in ("GET", "HEAD"):
                return 200, {"items": self._list(collection, query)}, {}
            if method == "POST":
                return self._create(collection, _parse_body(headers, body))
            raise DemoError(405, "method_not_allowed", f"{method} not allowed on /{collection}",
                            {"allow": "GET, HEAD, POST"})
        return self._item(method, collection, parts[1], headers, body)

    def _demo(self, method: str, rest: list[str]) -> tuple[int, Any, dict[str, str]]:
        if rest == ["health"] and method in ("GET", "HEAD"):
            return 200, {"ok": True}, {}
        if rest == ["requests"] and method in ("GET", "HEAD"):
            return 200, {"items": self.log}, {}
        if rest == ["reset"] and method == "POST":
            self.reset()
            return 200, {"reset": True}, {}
        raise DemoError(404, "not_found", "unknown demo endpoint")

    # -- collections -----------------------------------------------------------

    def _list(self, collection: str, query: bytes) -> list[dict[str, Any]]:
        """All items, optionally filtered by equality: ``/customers?plan=pro``."""
        filters = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        return [item for item in self.data[collection].values()
                if all(str(item.get(k)) == v for k, v in filters.items())]

    def _create(self, collection: str, fields: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        items = self.data[collection]
        wanted = fields.get("id")
        if wanted is None:
            self.counters[collection] += 1
            new_id = f"{PREFIXES[collection]}_{self.counters[collection]}"
            while new_id in items:  # a recreated id may sit ahead of the counter
                self.counters[collection] += 1
                new_id = f"{PREFIXES[collection]}_{self.counters[collection]}"
        else:
            if not isinstance(wanted, str) or not _ID.match(wanted):
                raise DemoError(400, "bad_request", "id must be 1-64 of [A-Za-z0-9_-]")
            if wanted in items:
                raise DemoError(409, "conflict", f"{wanted} already exists")
            new_id = wanted
            self._bump_counter(collection, new_id)
        obj = self._stamp(new_id, fields)
        items[new_id] = obj
        return 201, obj, {"location": f"/{collection}/{new_id}", "etag": etag(obj)}

    def _bump_counter(self, collection: str, item_id: str) -> None:
        prefix, _, number = item_id.partition("_")
        if prefix == PREFIXES[collection] and number.isdigit():
            self.counters[collection] = max(self.counters[collection], int(number))

    # -- items -----------------------------------------------------------------

    def _item(self, method: str, collection: str, item_id: str, headers: dict[str, str],
              body: bytes) -> tuple[int, Any, dict[str, str]]:
        items = self.data[collection]
        if method not in ("GET", "HEAD", "PUT", "PATCH", "DELETE"):
            raise DemoError(405, "method_not_allowed", f"{method} not allowed on an item",
                            {"allow": "GET, HEAD, PUT, PATCH, DELETE"})
        current = items.get(item_id)
        if current is None:
            raise DemoError(404, "not_found", f"no {collection[:-1]} {item_id}")
        if method in ("GET", "HEAD"):
            return 200, current, {"etag": etag(current)}
        if_match = headers.get("if-match")
        if if_match is not None and if_match.strip() not in ("*", etag(current)):
            raise DemoError(412, "precondition_failed", f"{item_id} changed (ETag mismatch)",
                            {"etag": etag(current)})
        if method == "DELETE":
            del items[item_id]
            return 204, None, {}
        fields = _parse_body(headers, body)
        if "id" in fields and fields["id"] != item_id:
            raise DemoError(400, "bad_request", "the body's id differs from the path's")
        base = {} if method == "PUT" else current
        obj = self._stamp(item_id, {**base, **fields})
        items[item_id] = obj
        return 200, obj, {"etag": etag(obj)}

    def _stamp(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in fields.items() if k not in SERVER_FIELDS}
        return {"id": item_id, **rest, "updated_at": self._now()}

    def _now(self) -> str:
        """Strictly increasing, so every write visibly changes ``updated_at``."""
        at = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        self._last = at
        return iso(at)


def create_app(seed: bool = True, token: str | None = None) -> CRM:
    """A fresh demo CRM; ``seed=False`` starts with empty collections."""
    return CRM(seed=seed, token=token)


def _parse_body(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """A JSON object or flat form fields; an empty body is no fields."""
    if not body.strip():
        return {}
    ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                  strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            raise DemoError(400, "bad_request", "malformed form body") from None
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise DemoError(415, "unsupported_media_type", f"cannot read {ctype} bodies")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise DemoError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise DemoError(400, "bad_request", "body must be a JSON object")
    return value


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= _MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > _MAX_BODY:
        raise DemoError(413, "too_large", "body over 1 MiB")
    return b"".join(chunks)


async def _respond(send: Send, status: int, payload: Any, extra: dict[str, str],
                   head: bool = False) -> None:
    body = b"" if payload is None else json.dumps(payload).encode()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    if payload is not None:
        headers.append((b"content-type", b"application/json"))
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve(host: str = "127.0.0.1", port: int = 3000, token: str | None = None,
          seed: bool = True) -> None:
    """Run the demo CRM with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(seed=seed, token=token), host=host, port=port, log_level="info")

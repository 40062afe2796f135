"""The REST sender: how the pipeline reads and reaches an HTTP API (``kind: http``).

A call is judged by its canonical path (``gateway.core.canonical``), its query
when a rule judges it, and its body when a rule judges it or the call writes;
each has one reading or the call is refused (400). A rule matches by path; a
call writes by its method unless the rule's ``effect`` says otherwise.
Reads stream both ways; a write is sent with the agent's headers (minus its
key, plus the upstream's credential) and read whole; the prior state is a GET
of the capture path; the gateway's own reads and compensations carry only
its own headers and the credential. Every request leaves through ``_send``,
where the credential's query parameter is added and SigV4 upstreams are
signed (``gateway.upstreams.credentials``), and every answer comes back with
the credential's values replaced wherever the upstream echoed them
(``unechoed``, ``gateway.core.redact.Echoes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway.core import canonical, shadow
from gateway.core import journal as journaling
from gateway.core.approvals import HeldCall
from gateway.core.body import (
    FORM,
    fields,
    form_override,
    json_body,
    media_type,
    named_twice,
    named_twice_aws,
)
from gateway.core.encoding import Decoder, codings
from gateway.core.headers import upstream_request_headers
from gateway.core.model import JournalEntry, is_mutating
from gateway.core.policy.compiled import CallView, Upstream
from gateway.core.policy.schema import Capture
from gateway.core.redact import Echoes
from gateway.core.rollback import Step
from gateway.errors import Ambiguous, BadRequest, CaptureFailed, GatewayError, UpstreamEncoding
from gateway.ports import Headers, Observed, UpstreamResponse, untraced
from gateway.ports import Upstream as UpstreamClient
from gateway.services.call import Answer, BodyReader, Call, plain_answer
from gateway.settings import Settings
from gateway.upstreams.credentials import signed, with_query


def canonical_target(raw_path: str) -> canonical.Target:
    """The one reading of a path (``gateway.core.canonical``), or 400."""
    try:
        return canonical.target(raw_path)
    except Ambiguous as exc:
        raise BadRequest(str(exc)) from None


def rebuilt(held: HeldCall, request_id: str) -> Call:
    """A held call as a call again, its body buffered."""
    return Call(request_id=request_id, agent=held.agent, agent_key=None,
                upstream=held.upstream, method=held.method, raw_path=held.raw_path,
                query=held.query, headers=list(held.headers), checkpoint=held.checkpoint,
                buffered=held.body)


def request_headers(upstream: Upstream, call: Call, drop_encoding: bool) -> list[tuple[str, str]]:
    """The agent's headers as the upstream may see them, with its credential."""
    credential, replaces = None, frozenset[str]()
    if upstream.credential is not None:
        replaces = upstream.credential.replaces
        credential = upstream.credential.headers[0] if upstream.credential.headers else None
    return upstream_request_headers(call.headers, call.agent_key, credential,
                                    urlsplit(upstream.base_url).netloc, drop_encoding, replaces)


def gateway_headers(upstream: Upstream, content_type: str | None = None) -> list[tuple[str, str]]:
    """Headers for the gateway's own calls (reads after writes, rollback): JSON, the
    upstream's credential, no compression."""
    headers = [("host", urlsplit(upstream.base_url).netloc), ("accept", "application/json"),
               ("accept-encoding", "identity")]
    if content_type:
        headers.append(("content-type", content_type))
    if upstream.credential is not None:
        headers.extend((name, value) for name, value in upstream.credential.headers if value)
    return headers


class RestSender:
    def __init__(self, settings: Settings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client

    # -- reading a call ----------------------------------------------------------------

    def view(self, call: Call) -> CallView:
        # The listener's reading; a call rebuilt from the store (approval) is read again.
        target = call.target if call.target is not None else canonical_target(call.raw_path)
        return CallView(call.method, target.decoded, list(target.segments),
                        dict(parse_qsl(call.query, keep_blank_values=True)) if call.query
                        else {}, dict(call.headers), call.agent)

    async def judged(self, upstream: Upstream, call: Call, view: CallView,
                     candidates: list[tuple[int, dict[str, str]]], read: BodyReader,
                     writes: bool) -> CallView:
        if call.query and upstream.judges_query(candidates):
            try:  # judged: one reading, and a lone ``Force`` judged as ``force``
                view = replace(view, query=fields(call.query, "query", aliases=True))
            except Ambiguous as exc:
                raise BadRequest(f"{exc}; a rule judges the query") from None
        if upstream.judges_headers(candidates):
            repeated = canonical.repeated_header(call.headers)
            if repeated is not None:  # the rule would read one, the upstream maybe the other
                raise BadRequest(f"header {repeated!r} is sent more than once; a rule judges "
                                 "the headers")
            respelt = canonical.respelt_header(call.headers, upstream.judged_headers(candidates))
            if respelt is not None:  # ``X_Force``: the rule sees no ``x-force``, WSGI does
                raise BadRequest(f"header {respelt!r} may be read as another spelling of a "
                                 "header a rule judges ('_' and '-' are one to WSGI and CGI "
                                 "servers); send it as the rule names it")
        judged = upstream.needs_body(candidates)
        if not (writes or judged):
            return view
        call.buffered = await read(call)
        if [name for name, _ in call.headers].count("content-type") > 1:
            raise BadRequest("Content-Type is given twice: the body would be read two ways")
        content_type = view.headers.get("content-type")
        try:  # judged or journaled: one reading, or 400
            parsed = json_body(call.buffered, content_type, exact=judged)
        except Ambiguous as exc:
            raise BadRequest(f"request body: {exc}") from None
        if form_override(parsed) and media_type(content_type) == FORM:
            raise BadRequest("a _method form field is a method override: the policy "
                             "judges the request method")
        if view.query and isinstance(parsed, dict) and media_type(content_type) == FORM \
                and upstream.judges_query(candidates):
            twice = named_twice(view.query, parsed)
            if twice is not None:  # the rule judged the query's, the upstream may read this
                raise BadRequest(f"form field {twice!r} names a query parameter again; a rule "
                                 "judges the query")
        if upstream.judges_action(candidates) and named_twice_aws(call.headers, view.query,
                                                                  parsed):
            raise BadRequest("the call names its operation in X-Amz-Target and in Action: "
                             "AWS services that speak both protocols (SQS) may run either")
        return CallView(view.method, view.path, view.segments, view.query, view.headers,
                        view.agent, parsed)

    def rebuilt(self, held: HeldCall, request_id: str) -> Call:
        return rebuilt(held, request_id)

    def held_view(self, upstream: Upstream, call: Call) -> CallView:
        view = self.view(call)  # read as a live call is: one reading, or it is not sent
        try:
            body = json_body(call.buffered or b"", view.headers.get("content-type"),
                             exact=upstream.needs_body(upstream.trie.match(view.segments)))
        except Ambiguous as exc:
            raise BadRequest(f"the held call's body: {exc}") from None
        return replace(view, body=body)

    def params(self, upstream: Upstream, rule_id: str | None,
               view: CallView) -> dict[str, str] | None:
        return next((p for index, p in upstream.trie.match(view.segments)
                     if upstream.spec.rules[index].id == rule_id), None)

    def writes(self, upstream: Upstream, rule_id: str | None, method: str) -> bool:
        effect = getattr(upstream.rule(rule_id), "effect", None)  # None unless it says
        return effect == "write" or (effect is None and is_mutating(method))

    def projection(self, upstream: Upstream, call: Call, view: CallView,
                   entry: JournalEntry) -> shadow.Projection:
        rule = upstream.rule(entry.rule)
        return shadow.project(
            view.method, entry.prior, entry.prior_status, view.body,
            media_type(entry.request_content_type) == FORM,
            f"/{upstream.name}{call.raw_path}", entry.id,
            captured_path=isinstance(getattr(rule, "capture", None), Capture))

    def answer(self, method: str, body: bytes, content_type: str | None,
               sent: Any = None) -> Answer:
        return plain_answer(body, content_type)  # failed: the status says

    # -- sending -----------------------------------------------------------------------

    def _url(self, upstream: Upstream, raw_path: str, query: str) -> str:
        return upstream.base_url + raw_path + (f"?{query}" if query else "")

    async def _send(self, upstream: Upstream, method: str, url: str, headers: Headers,
                    body: Any, **options: Any) -> UpstreamResponse:
        """Every request to an upstream: its credential's query parameter, its signature."""
        url = with_query(upstream, url)
        payload = body if body is None or isinstance(body, bytes) else None
        if upstream.credential is not None and upstream.credential.sigv4 is not None \
                and body is not None and payload is None:
            payload = body = b"".join([chunk async for chunk in body])  # signed whole
        headers = signed(upstream, method, url, list(headers), payload)
        hidden = upstream.echoes
        if hidden is None:
            return await self.client.request(method, url, headers, body, **options)
        try:
            response = await self.client.request(method, url, headers, body, **options)
        except GatewayError as exc:  # a timeout's or a lost call's head (a Location)
            head = getattr(exc, "head", None)
            if head is not None:
                exc.head = (head[0], hidden.headers(head[1]))  # type: ignore[attr-defined]
            raise
        return await unechoed(response, hidden, method)

    def _timeout(self, upstream: Upstream) -> float:
        return upstream.spec.timeout or self.settings.upstream_timeout

    async def relay(self, upstream: Upstream, call: Call,
                    trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        body = call.buffered if call.buffered is not None else call.body
        hidden = upstream.echoes is not None  # an echo in a compressed body is not seen
        headers = request_headers(upstream, call, drop_encoding=hidden or bool(
            getattr(upstream.spec, "rewrite_urls", False)))
        if hidden:
            headers.append(("accept-encoding", "identity"))
        return await self._send(
            upstream, call.method, self._url(upstream, call.raw_path, call.query),
            trace(headers), body, stream=True,
            timeout=self._timeout(upstream), total=call.facts.get("rule") not in upstream.streams)

    async def forward(self, upstream: Upstream, call: Call, approved: bool,
                      trace: Callable[[Headers], Headers] = untraced) -> UpstreamResponse:
        return await self._send(
            upstream, call.method, self._url(upstream, call.raw_path, call.query),
            trace(request_headers(upstream, call, drop_encoding=True)), call.buffered,
            timeout=self._timeout(upstream))

    async def capture(self, upstream: Upstream, call: Call, target: str,
                      trace: Callable[[Headers], Headers] = untraced) -> Observed:
        headers = [h for h in request_headers(upstream, call, drop_encoding=True)
                   if h[0] not in ("content-type", "content-encoding")]
        headers.append(("accept-encoding", "identity"))
        try:
            response = await self._send(
                upstream, "GET", upstream.base_url + target, trace(headers), None,
                timeout=self.settings.capture_timeout)
        except GatewayError as exc:
            raise CaptureFailed(f"prior-state GET {target} failed ({exc.message}); "
                                "the write was not sent") from exc
        status = response.status
        if not (200 <= status < 300 or status in (404, 410)):
            raise CaptureFailed(f"prior-state GET {target} answered {status}; "
                                "the write was not sent", capture_status=status)
        return _observed(response, None)

    async def read(self, upstream: Upstream, target: str) -> Observed:
        response = await self._send(
            upstream, "GET", upstream.base_url + target, gateway_headers(upstream), None,
            timeout=self.settings.capture_timeout)
        etag = next((v for k, v in response.headers if k.lower() == "etag"), None)
        return _observed(response, etag)

    def own_headers(self, upstream: Upstream, content_type: str | None) -> list[tuple[str, str]]:
        return gateway_headers(upstream, content_type)

    async def compensate(self, upstream: Upstream, step: Step, headers: list[tuple[str, str]],
                         body: bytes | None) -> UpstreamResponse:
        return await self._send(upstream, step.method, upstream.base_url + step.path, headers,
                                body, timeout=self.settings.upstream_timeout)

    async def close(self) -> None:
        return None  # the client is the gateway's, closed by it


async def unechoed(response: UpstreamResponse, hidden: Echoes,
                   method: str) -> UpstreamResponse:
    """``response`` without the credential wherever the upstream echoed it: headers, a
    body read whole (its length told again), a stream (chunk by chunk, its length no
    longer known). A body compressed although identity was asked for is decoded first
    and passed on as identity (gzip, deflate), or refused (``UpstreamEncoding``, any
    other coding: an echo could hide in it). Everything after the sender (the agent,
    the journal, held calls' answers, errors) reads only this."""
    headers = hidden.headers(response.headers)
    decoder = None
    if method != "HEAD" and response.status not in (204, 304):
        applied = codings(headers)
        if applied:
            try:
                decoder = Decoder(applied)
            except UpstreamEncoding:
                await _close(response.stream)
                raise
            headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
    if response.body is not None:
        raw = decoder.whole(response.body) if decoder is not None else response.body
        body = hidden.body(raw)
        if len(body) != len(response.body):
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v)
                       for k, v in headers]
        return UpstreamResponse(response.status, headers, body=body)
    if response.stream is None:
        return UpstreamResponse(response.status, headers)
    if method != "HEAD":
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    return UpstreamResponse(response.status, headers,
                            stream=_unechoed(response.stream, hidden, decoder))


async def _unechoed(chunks: AsyncIterator[bytes], hidden: Echoes,
                    decoder: Decoder | None) -> AsyncIterator[bytes]:
    stream = hidden.stream()
    try:
        if decoder is None:
            async for chunk in chunks:
                out = stream.feed(chunk)
                if out:
                    yield out
        else:  # (the upstream compressed although asked not to)
            async for chunk in chunks:
                for piece in decoder.feed(chunk):
                    out = stream.feed(piece)
                    if out:
                        yield out
            out = stream.feed(decoder.end())
            if out:
                yield out
    finally:  # closed early (the agent went away): the upstream's connection with it
        await _close(chunks)
    rest = stream.end()
    if rest:
        yield rest


async def _close(chunks: AsyncIterator[bytes] | None) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


def _observed(response: UpstreamResponse, etag: str | None) -> Observed:
    """What was read: the journal's (redacted) value, and the bytes for what is sealed."""
    body = response.body or b""
    content_type, meta = None, []
    for name, value in response.headers:  # one pass: each name lowered once
        low = name.lower()
        if low == "content-type":
            if content_type is None:
                content_type = value
        elif journaling.object_header(low):
            meta.append((low, value))
    shown, true = journaling.read_state(body, response.status, content_type)
    return Observed(response.status, shown, etag, body, content_type, tuple(meta), true)

"""Header names spelt with ``_`` (controls4 item 1).

WSGI and CGI servers, and Puma (Rack), read ``X_Force`` and ``X-Force`` as one
variable (``HTTP_X_FORCE``); most other servers read two headers. A header a
``when`` judges, a method override, a routing header or the gateway's own
vocabulary spelt with ``_`` would be unseen by the gateway and obeyed by such an
upstream. Where a rule judges the headers, such a spelling is 400; a method
override so spelt is 400; a dropped header so spelt is dropped too. Headers no
rule reads pass as they came. Each row is checked at the recording upstream.
"""

from __future__ import annotations

import pytest

from tests.trust.recording import Trusted

RULES = """
- id: forced
  match:
    methods: [GET]
    path: /jobs
    when: "'x-force' in request.headers && request.headers['x-force'] == 'true'"
  action: deny
- id: debug
  match: {methods: [GET], path: "/debug", when: "has(request.headers.debug_mode)"}
  action: deny
- id: danger
  match: {methods: [GET], path: "/danger", when: "request.headers.exists(h, h.startsWith('x-danger'))"}
  action: deny
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""

REFUSED = [
    # (row id, request head): each would reach the upstream as what the rule denies
    ("judged-header-underscored", "GET /crm/jobs HTTP/1.1\nX_Force: true"),
    ("judged-header-underscored-lower", "GET /crm/jobs HTTP/1.1\nx_force: true"),
    ("judged-underscore-name-dashed", "GET /crm/debug HTTP/1.1\nDebug-Mode: on"),
    ("unnamed-read-underscored", "GET /crm/danger HTTP/1.1\nX_Danger_Zone: 1"),
    ("method-override-underscored", "POST /crm/customers HTTP/1.1\n"
                                    "X_HTTP_Method_Override: DELETE"),
    ("method-override-mixed", "POST /crm/customers HTTP/1.1\nX-HTTP_Method: DELETE"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("head", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_a_spelling_the_gateway_cannot_judge_is_refused(gw: Trusted, head: str) -> None:
    reply = await gw.send(head)
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["code"] == "bad_request"
    assert gw.upstream.reached() == []


PASSED = [
    # (row id, request head, the header as the upstream gets it)
    ("judged-header-as-named", "GET /crm/jobs HTTP/1.1\nX-Force: false", "x-force"),
    ("unjudged-name-beside-judged", "GET /crm/jobs HTTP/1.1\nX_Trace: 1", "x_trace"),
    ("no-rule-reads-headers", "GET /crm/customers/1 HTTP/1.1\nX_Force: true", "x_force"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("head", "header"), [r[1:] for r in PASSED],
                         ids=[r[0] for r in PASSED])
async def test_a_spelling_no_rule_could_misread_passes(gw: Trusted, head: str,
                                                       header: str) -> None:
    reply = await gw.send(head)
    assert reply.status == 200, reply.body
    [arrival] = gw.upstream.reached()
    assert header in arrival.headers


DROPPED = [
    # (row id, header line): the ``-`` spelling is never forwarded, nor is this one
    ("routing-header", "X_Original_URL: /admin"),
    ("forwarded-host", "X_Forwarded_Host: evil.example"),
    ("gateway-vocabulary", "X_Gateway_Decision: allow"),
    ("checkpoint", "X_Agent_Run: r1"),
    ("hop-by-hop", "Transfer_Encoding: chunked"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("line", [r[1] for r in DROPPED], ids=[r[0] for r in DROPPED])
async def test_a_dropped_header_spelt_with_underscores_is_dropped(gw: Trusted,
                                                                   line: str) -> None:
    reply = await gw.send(f"GET /crm/customers/1 HTTP/1.1\n{line}")
    assert reply.status == 200, reply.body
    [arrival] = gw.upstream.reached()
    name = line.split(":")[0].lower()
    assert name not in arrival.headers and name.replace("_", "-") not in arrival.headers

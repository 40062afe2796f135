"""What each rule lets an agent change, and whether the gateway can undo it.

The operator's map (``gateway policy explain DIR``): per rule its tier
(``read``: only GET/HEAD/OPTIONS without ``effect: write``, or ``effect: read``;
``destructive``: may DELETE; ``write`` otherwise), what is captured first, the undo, and the reversibility:

- ``reversible``: the undo is known before the call is sent (PUT/PATCH/DELETE
  with a captured prior state, a POST with a capture path, a rule's ``undo``);
- ``reversible with reconciliation``: the undo is learned from the answer (a
  POST to a collection is undone by deleting what it created, found from
  ``Location`` or the response's ``id``);
- ``irreversible``: ``undo: none``, no capture where the undo needs one, or an
  inverse that cannot be inferred. ``gateway policy check`` warns about rules
  of that last kind (``warnings``): a POST to an item path without a capture
  would otherwise have no honest inverse (the journal marks it irreversible).

Reads of ``gateway.core.journal``'s inference, statically (per rule, not per call).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.policy.compiled import Upstream
from gateway.core.policy.mcp_schema import McpPolicyFile, McpRule
from gateway.core.policy.schema import Rule, UndoSpec
from gateway.core.template import Template

REVERSIBLE = "reversible"
RECONCILED = "reversible with reconciliation"
IRREVERSIBLE = "irreversible"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class RuleMap:
    upstream: str
    rule: str
    action: str
    tier: str
    capture: str
    undo: str
    reversibility: str
    why: str = ""


def _item_path(path: str) -> bool:
    """The template's last segment names one item (``{id}`` or ``*``)."""
    segments = Template.parse(path).segments
    return bool(segments) and (segments[-1] == "*" or segments[-1].startswith("{"))


def _explain_method(rule: Rule, method: str) -> tuple[str, str, str, str]:
    """(capture, undo, reversibility, why) for one mutating method of ``rule``."""
    path = rule.match.path
    if rule.capture is False:
        capture = "none"
    elif rule.capture is not None:
        capture = f"GET {rule.capture.path}"
    else:
        capture = f"GET {path}" if method in ("PUT", "PATCH", "DELETE") else "none"
    spec = rule.undo
    if spec == "none":
        return capture, "none", IRREVERSIBLE, "undo: none"
    if isinstance(spec, UndoSpec):
        text = f"{spec.method} {spec.path}" + (f" body: {spec.body}" if spec.body else "")
        if spec.body in ("prior", "prior_fields") and capture == "none":
            return capture, text, IRREVERSIBLE, "the undo sends the prior state, nothing captures it"
        return capture, text, REVERSIBLE, ""
    if method in ("PUT", "PATCH"):
        if capture == "none":
            return capture, "none", IRREVERSIBLE, "capture: false leaves no prior state"
        return capture, f"PUT {path} body: prior (DELETE if it did not exist)", REVERSIBLE, ""
    if method == "DELETE":
        if capture == "none":
            return capture, "none", IRREVERSIBLE, "capture: false leaves no prior state"
        return capture, "POST to the parent collection body: prior", REVERSIBLE, ""
    if method == "POST":
        if rule.capture:
            return capture, f"POST {rule.capture.path} body: prior_fields", REVERSIBLE, ""
        if _item_path(path):
            return (capture, "none", IRREVERSIBLE,
                    "a POST to an item path without a capture: its undo cannot be inferred "
                    "(add capture and undo, or undo: none)")
        return capture, "DELETE the created resource (Location or id)", RECONCILED, ""
    return capture, "none", IRREVERSIBLE, f"{method} has no inferred undo"


_RANK = {REVERSIBLE: 0, RECONCILED: 1, IRREVERSIBLE: 2}


def explain_rule(upstream: str, rule: Rule) -> RuleMap:
    # the methods that write: ``effect`` says, else the method (GET, HEAD, OPTIONS read)
    methods = [m for m in rule.match.methods if rule.effect == "write"
               or (m not in _READS and rule.effect != "read")]
    if not methods or rule.action == "deny":
        tier = "read" if not methods else ("destructive" if "DELETE" in methods else "write")
        return RuleMap(upstream, rule.id, rule.action, tier, "-", "-",
                       "-", "denied" if rule.action == "deny" else "reads change nothing")
    tier = "destructive" if "DELETE" in methods else "write"
    parts = {m: _explain_method(rule, m) for m in methods}
    worst = max(parts.values(), key=lambda p: _RANK[p[2]])
    if len(set(parts.values())) == 1 or len(methods) == 1:
        capture, undo = worst[0], worst[1]
    else:
        capture = "; ".join(f"{m}: {p[0]}" for m, p in parts.items())
        undo = "; ".join(f"{m}: {p[1]}" for m, p in parts.items())
    return RuleMap(upstream, rule.id, rule.action, tier, capture, undo, worst[2], worst[3])


def explain_tool(upstream: str, rule: McpRule) -> RuleMap:
    if rule.effect == "read" or rule.action == "deny":
        return RuleMap(upstream, rule.id, rule.action, "read" if rule.effect == "read" else "write",
                       "-", "-", "-")
    capture = f"tool {rule.capture.tool}" if rule.capture else "none"
    if rule.undo == "none" or rule.undo is None:
        return RuleMap(upstream, rule.id, rule.action, "write", capture, "none", IRREVERSIBLE,
                       "undo: none" if rule.undo == "none" else "no undo tool")
    return RuleMap(upstream, rule.id, rule.action, "write", capture, f"tool {rule.undo.tool}",
                   REVERSIBLE)


def explain(upstream: Upstream) -> list[RuleMap]:
    spec = upstream.spec
    if isinstance(spec, McpPolicyFile):
        return [explain_tool(upstream.name, rule) for rule in spec.rules]
    return [explain_rule(upstream.name, rule) for rule in spec.rules]


def warnings(upstream: Upstream) -> list[str]:
    """``rule 'X': ...`` for every allowed or held write whose undo cannot be inferred."""
    if isinstance(upstream.spec, McpPolicyFile):
        return []
    out = []
    for rule in upstream.spec.rules:
        line = explain_rule(upstream.name, rule)
        if line.reversibility == IRREVERSIBLE and line.why.startswith("a POST to an item"):
            out.append(f"rule {rule.id!r}: {line.why}")
    return out

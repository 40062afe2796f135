"""Policy files -> PolicySet, or one ``file:line: message`` per problem.

Each broken fixture in ``fixtures/broken`` has exactly one problem; the table
names the line it is on and the message ``gateway policy check`` prints.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gateway.core.policy.loader import load_policy_set, missing_variables, parse_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BROKEN = FIXTURES / "broken"
POLICIES = Path(__file__).resolve().parents[2] / "policies"
PROBLEM = re.compile(r"^[\w.-]+\.yaml:\d+: \S")

VALID = """\
version: 1
upstream: crm
base_url: http://127.0.0.1:3000/
credentials: {header: Authorization, value: "Bearer ${CRM_TOKEN}"}
default: deny
rules:
  - id: read-all
    match: {methods: [GET, HEAD], path: "/**"}
    action: allow
"""


# every ${VAR} the tests' and shipped policies name (an unset one is a problem)
ENV = {name: "x" for name in ("CRM_TOKEN", "GITHUB_TOKEN", "HUBSPOT_ACCESS_TOKEN",
                              "STRIPE_API_KEY", "ZENDESK_BASIC", "ZENDESK_OAUTH_TOKEN",
                              "ZENDESK_EMAIL", "ZENDESK_API_TOKEN", "OPENAI_API_KEY",
                              "SLACK_BOT_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def problems_of(name: str) -> list[str]:
    text = (BROKEN / name).read_text()
    policy_set, problems = load_policy_set({name: text}, env=ENV)
    assert policy_set is None
    return problems


BROKEN_CASES = [
    # file, line, message
    ("unknown_top_level_key.yaml", 4, "unknown key 'retries'"),
    ("unknown_rule_key.yaml", 8, "unknown key 'comment' in rules.0"),
    ("unknown_match_key.yaml", 7, "unknown key 'paths' in rules.0.match"),
    ("unknown_action.yaml", 7,
     "rule 'read-all': rules.0.action: unknown action 'permit' (allow, deny, hold or delay)"),
    ("unknown_method.yaml", 6, "rule 'read-all': rules.0.match.methods: unknown method 'FETCH'"),
    ("bad_path_template.yaml", 7,
     ("rule 'json-view': rules.0.match.path: path template '/customers/{id}.json': "
      "bad segment '{id}.json'")),
    ("invalid_cel.yaml", 8, "rule 'big-deal': rules.0.match.when: invalid CEL in when"),
    ("duplicate_rule_id.yaml", 8, "duplicate rule id 'read-all' (first at line 4)"),
    ("bad_upstream_name.yaml", 2,
     "upstream: upstream name 'My_CRM' must match [a-z0-9][a-z0-9-]*"),
    ("bad_base_url.yaml", 3,
     "base_url: base_url 'ftp://127.0.0.1:3000' must be an http(s) URL without query"),
    ("missing_upstream.yaml", 3, "upstream: Field required"),
    ("yaml_syntax_error.yaml", 3, "invalid YAML: mapping values are not allowed here"),
    ("duplicate_yaml_key.yaml", 4, "duplicate key 'default'"),
    ("capture_unbound_name.yaml", 4,
     ("rule 'edit-note': rules.0: capture path uses {customer}, which match.path "
      "'/notes/{id}' does not bind")),
    ("undo_unbound_name.yaml", 7,
     ("rule 'edit-note': rules.1: undo path uses {note}, which match.path "
      "'/notes/{id}' does not bind")),
    ("approval_on_allow.yaml", 4,
     "rule 'refunds': rules.0: approval is only allowed on rules with action: hold"),
    ("version_2.yaml", 1, "version: Input should be 1"),
    ("empty.yaml", 1, "empty policy file"),
    ("only_comments.yaml", 1, "empty policy file"),
    ("not_a_mapping.yaml", 1, "a policy file is a mapping"),
    # autonomy: modes and delays
    ("unknown_mode.yaml", 7,
     "rule 'refunds': rules.0.mode: unknown mode 'dry-run' (enforce, observe or shadow)"),
    ("unknown_file_mode.yaml", 3, "mode: unknown mode 'watch' (enforce, observe or shadow)"),
    ("delay_without_seconds.yaml", 4,
     "rule 'deletes': rules.0: action: delay needs delay: {seconds: N}"),
    ("delay_on_hold.yaml", 4,
     "rule 'deletes': rules.0: delay is only allowed on rules with action: delay"),
    ("delay_not_positive.yaml", 7,
     "rule 'deletes': rules.0.delay.seconds: Input should be greater than 0"),
    # MCP upstreams (kind: mcp)
    ("mcp_unknown_kind.yaml", 3, "kind: unknown kind 'grpc' (http or mcp)"),
    ("mcp_path_in_match.yaml", 6, "rule 'reads': unknown key 'path' in rules.0.match"),
    ("mcp_unknown_effect.yaml", 8,
     "rule 'lookups': rules.0.effect: unknown effect 'readonly' (read or write)"),
    ("mcp_read_with_capture.yaml", 5,
     "rule 'lookups': rules.0: effect: read calls are not journaled; capture and undo do not "
     "apply"),
    ("mcp_undo_prior_without_capture.yaml", 5,
     "rule 'edit': rules.0: undo uses the prior state, which needs a capture tool"),
    ("mcp_bad_placeholder.yaml", 8,
     "rule 'edit': rules.0.capture: capture.arguments: placeholder {args.id} must name "
     "{arguments.NAME} or {prior.NAME}"),
    ("mcp_bad_tool_glob.yaml", 6,
     "rule 'everything': rules.0.match.tools: tool glob 'get customer' must be 1-128 of"),
    ("mcp_capture_glob_tool.yaml", 8,
     "rule 'edit': rules.0.capture.tool: tool name 'get_*' must be 1-128 of"),
    ("mcp_bad_undo_arguments.yaml", 9,
     "rule 'edit': rules.0.undo.arguments: should be 'prior' or 'prior_fields' or a mapping"),
]


@pytest.mark.parametrize(("name", "line", "message"), BROKEN_CASES,
                         ids=[case[0] for case in BROKEN_CASES])
def test_broken_file_is_reported_at_its_line(name: str, line: int, message: str) -> None:
    problems = problems_of(name)
    assert [p for p in problems if p.startswith(f"{name}:{line}: ") and message in p], problems
    assert all(PROBLEM.match(p) for p in problems), problems


# A YAML tag the safe loader cannot construct, and a mapping used as a key, are
# still YAML problems: ``gateway policy check`` must print them as ``file:line``
# instead of crashing with a traceback.
@pytest.mark.parametrize(("name", "line"), [
    ("unknown_yaml_tag.yaml", 3),
    ("unhashable_key.yaml", 3),
])
def test_unloadable_yaml_is_a_problem_not_a_crash(name: str, line: int) -> None:
    problems = problems_of(name)
    assert [p for p in problems if p.startswith(f"{name}:{line}: ")], problems


def test_every_broken_fixture_is_in_the_table() -> None:
    listed = {case[0] for case in BROKEN_CASES} | {"unknown_yaml_tag.yaml", "unhashable_key.yaml"}
    assert {p.name for p in BROKEN.glob("*.yaml")} == listed


def test_one_file_per_problem_each_with_exactly_one() -> None:
    counts = {name: len(problems_of(name)) for name, _, _ in BROKEN_CASES}
    assert {name: n for name, n in counts.items() if n != 1} == {}


def test_problems_of_all_files_are_reported_together() -> None:
    texts = {name: (BROKEN / name).read_text() for name, _, _ in BROKEN_CASES}
    policy_set, problems = load_policy_set(texts, env=ENV)
    assert policy_set is None
    assert {p.split(":", 1)[0] for p in problems} == set(texts)


def test_duplicate_upstream_across_two_files() -> None:
    folder = FIXTURES / "duplicate_upstream"
    texts = {p.name: p.read_text() for p in folder.glob("*.yaml")}
    policy_set, problems = load_policy_set(texts, env=ENV)
    assert policy_set is None
    assert problems == ["b_crm_again.yaml:3: duplicate upstream 'crm' (also in a_crm.yaml)"]


def test_no_files_is_a_problem() -> None:
    assert load_policy_set({}, env=ENV) == (None, ["no policy files (*.yaml) found"])


def test_problems_are_sorted_by_line() -> None:
    text = ("upstream: crm\nbase_url: http://x\nrules:\n"
            "  - id: b\n    action: nope\n"
            "  - id: a\n    action: allow\n    extra: 1\n")
    _, _, problems = parse_file("p.yaml", text)
    assert [p.split(":")[1] for p in problems] == ["5", "8"]


@pytest.mark.parametrize("folder", [POLICIES, POLICIES / "examples"], ids=["policies", "examples"])
def test_shipped_policies_load_without_problems(folder: Path) -> None:
    texts = {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    assert texts
    policy_set, problems = load_policy_set(texts, env=ENV)
    assert problems == []
    assert policy_set is not None
    assert len(policy_set.upstreams) == len(texts)
    assert policy_set.files == tuple(sorted(texts))


def test_valid_file_compiles() -> None:
    policy_set, problems = load_policy_set({"crm.yaml": VALID}, env={"CRM_TOKEN": "t0k"})
    assert problems == []
    assert policy_set is not None
    crm = policy_set.upstreams["crm"]
    assert crm.name == "crm"
    assert crm.base_url == "http://127.0.0.1:3000"  # trailing slash dropped
    assert crm.source == "crm.yaml"
    assert crm.spec.rules[0].match.methods == ("GET", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{16}", policy_set.revision)


@pytest.mark.parametrize(("methods", "expected"), [
    ("[get, Patch]", ("GET", "PATCH")),
    ("POST", ("POST",)),
    ('["*"]', ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")),
])
def test_methods_are_normalised(methods: str, expected: tuple[str, ...]) -> None:
    text = VALID.replace("[GET, HEAD]", methods)
    policy_set, problems = load_policy_set({"crm.yaml": text}, env=ENV)
    assert problems == []
    assert policy_set is not None
    assert policy_set.upstreams["crm"].spec.rules[0].match.methods == expected


# --- revision ---------------------------------------------------------------------------------

def revision(texts: dict[str, str]) -> str:
    policy_set, problems = load_policy_set(texts, env=ENV)
    assert problems == [] and policy_set is not None
    return policy_set.revision


OTHER = "upstream: billing\nbase_url: https://billing.example\n"


def test_revision_is_stable() -> None:
    first = revision({"crm.yaml": VALID, "billing.yaml": OTHER})
    assert revision({"crm.yaml": VALID, "billing.yaml": OTHER}) == first
    assert revision({"billing.yaml": OTHER, "crm.yaml": VALID}) == first  # order of the mapping
    # the environment is not part of the revision: it holds secrets, not policy
    policy_set, _ = load_policy_set({"crm.yaml": VALID, "billing.yaml": OTHER},
                                    env={"CRM_TOKEN": "x"})
    assert policy_set is not None and policy_set.revision == first


@pytest.mark.parametrize("edit", [
    lambda t: t + "\n",                                   # a trailing newline
    lambda t: "# a comment\n" + t,                        # a comment
    lambda t: t.replace("default: deny", "default: deny "),  # a space
    lambda t: t.replace("read-all", "read-alL"),          # one letter of a rule id
    lambda t: t.replace("3000", "3001"),                  # one digit
    lambda t: t.replace("\n", "\r\n", 1),                 # a line ending
], ids=["newline", "comment", "space", "letter", "digit", "crlf"])
def test_revision_changes_when_any_byte_changes(edit: Callable[[str], str]) -> None:
    before = revision({"crm.yaml": VALID})
    edited = edit(VALID)
    assert edited != VALID
    assert revision({"crm.yaml": edited}) != before


def test_revision_changes_with_a_file_name_or_a_new_file() -> None:
    before = revision({"crm.yaml": VALID})
    assert revision({"crm2.yaml": VALID}) != before
    assert revision({"crm.yaml": VALID, "billing.yaml": OTHER}) != before


def test_a_trailing_space_on_any_line_changes_the_revision() -> None:
    lines = VALID.splitlines(keepends=True)
    revisions = {revision({"crm.yaml": VALID})}
    for i in range(len(lines)):
        edited = "".join(lines[:i] + [lines[i].replace("\n", " \n")] + lines[i + 1:])
        revisions.add(revision({"crm.yaml": edited}))
    assert len(revisions) == len(lines) + 1


# --- credentials from the environment -------------------------------------------------------

@pytest.mark.parametrize(("value", "env", "expected"), [
    ("Bearer ${CRM_TOKEN}", {"CRM_TOKEN": "s3cret"}, "Bearer s3cret"),
    ("${USER_}:${PASS_2}", {"USER_": "u", "PASS_2": "p"}, "u:p"),
    ("Bearer $CRM_TOKEN", {"CRM_TOKEN": "s3cret"}, "Bearer $CRM_TOKEN"),  # only ${...}
    ("literal", {"CRM_TOKEN": "s3cret"}, "literal"),
])
def test_credentials_expand_from_the_env_passed_in(value: str, env: dict[str, str],
                                                   expected: str) -> None:
    text = VALID.replace('"Bearer ${CRM_TOKEN}"', f'"{value}"')
    policy_set, problems = load_policy_set({"crm.yaml": text}, env=env)
    assert problems == []
    assert policy_set is not None
    crm = policy_set.upstreams["crm"]
    assert crm.credential_value == expected
    assert crm.spec.credentials is not None
    assert crm.spec.credentials.value == value  # the model keeps the template, not the secret


def test_credentials_are_not_read_from_the_process_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "from-os-environ")
    policy_set, _ = load_policy_set({"crm.yaml": VALID}, env={"CRM_TOKEN": "from-mapping"})
    assert policy_set is not None
    assert policy_set.upstreams["crm"].credential_value == "Bearer from-mapping"


def test_missing_variables() -> None:
    model, _, problems = parse_file("crm.yaml", VALID)
    assert problems == [] and model is not None
    assert missing_variables(model, {}) == ["CRM_TOKEN"]
    assert missing_variables(model, {"CRM_TOKEN": ""}) == []


def test_no_credentials_no_credential_value() -> None:
    policy_set, _ = load_policy_set({"b.yaml": OTHER}, env={"X": "y"})
    assert policy_set is not None
    assert policy_set.upstreams["billing"].credential_value is None


def test_loading_keeps_no_yaml_nodes_alive() -> None:
    # gateway reloads policies at run time (POST /v1/policies/reload): a load must not leave
    # its parse tree behind in module state, or every reload leaks it.
    def live_nodes() -> int:  # nodes hold no cycles: refcounting frees them, no gc.collect
        return sum(1 for o in gc.get_objects() if isinstance(o, yaml.Node))

    load_policy_set({"crm.yaml": VALID}, env=ENV)  # warm up anything cached once
    before = live_nodes()
    for _ in range(3):
        load_policy_set({"crm.yaml": VALID}, env=ENV)
    assert live_nodes() == before

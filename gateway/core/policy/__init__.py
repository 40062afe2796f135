"""Policies: what each upstream's file allows, and the decision for one call (pure).

- ``schema``: a REST upstream's file, strict (``extra="forbid"``), and what both kinds share;
- ``mcp_schema``: an MCP upstream's file (``kind: mcp``): rules over tool names and arguments;
- ``compiled``: a file compiled (path trie, conditions, templates, expanded credential);
- ``decide``: the policy set and the decision for one call;
- ``loader``: file texts to a policy set, or ``file:line: message`` problems.
"""

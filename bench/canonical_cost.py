"""What canonicalisation adds to one call, on its own (no network, one core).

Per call the listener canonicalises the target (a plain ASCII path is one regex
match; a path seen lately is a cache hit) and the pipeline reads it back, the
query is checked for ``_method``, and the trie may fold a segment that missed a
literal.
Prints microseconds per call for each step; compare with the gateway's read
p50 from ``bench/run.py`` (hundreds of microseconds).

    .venv/bin/python bench/canonical_cost.py
"""

from __future__ import annotations

import timeit

from gateway.core import canonical
from gateway.core.body import json_body
from gateway.core.template import PathTrie, Template

PATHS = ["/items/42", "/customers/cus_8f3a/notes", "/files/%C3%A9t%C3%A9/a%20b"]


def main() -> None:
    trie = PathTrie()
    for index, text in enumerate(["/admin/**", "/items/{id}", "/customers/{id}/notes", "/**"]):
        trie.add(index, Template.parse(text))
    n = 200_000
    print(f"{'step':<44} {'us/call':>8}")
    uncached = canonical._target
    for path in PATHS:
        t = timeit.timeit(lambda p=path: uncached(p), number=n) / n * 1e6
        print(f"{'target (first sight) ' + path:<44} {t:8.3f}")
        t = timeit.timeit(lambda p=path: canonical.target(p), number=n) / n * 1e6
        print(f"{'target (cached) ' + path:<44} {t:8.3f}")
        segments = list(canonical.target(path).segments)
        t = timeit.timeit(lambda s=segments: trie.match(s), number=n) / n * 1e6
        print(f"{'trie.match ' + path:<44} {t:8.3f}")
    for query in ("", "page=2&q=abc"):
        t = timeit.timeit(lambda q=query: canonical.method_override(q), number=n) / n * 1e6
        print(f"{'method_override ' + repr(query):<44} {t:8.3f}")
    body = b'{"amount": 120, "customer": "cus_8f3a", "note": "refund for order 1001"}'
    t = timeit.timeit(lambda: json_body(body, "application/json"), number=n) / n * 1e6
    print(f"{'json_body (74-byte write body)':<44} {t:8.3f}")


if __name__ == "__main__":
    main()

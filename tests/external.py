"""What some tests need from outside Python: PostgreSQL, Chromium, node/npm.

On a developer's machine that lacks one, those tests are skipped with the
reason; under CI (``CI`` set), where ``.ci/run`` installs and starts all of
them, a missing one fails the run instead.
"""

from __future__ import annotations

import os

import pytest


def missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)

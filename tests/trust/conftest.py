"""One gateway per module for rows that only send a request and read what arrived.

``trusted_gateway`` per row costs a gateway start (its store migrated, its
services started) for one request. Rows of a module that judge reads alone
(nothing journaled, nothing held, nothing sent in the background) share
``module_gateway``, built from the module's ``RULES`` (and its ``SHARED_GATEWAY``
options, if any, for ``trusted_gateway``); ``gw`` hands it to a row with an
empty recording. Such a row is marked ``@pytest.mark.asyncio(loop_scope="module")``
to run in the loop the gateway was started in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.trust.recording import Trusted, trusted_gateway


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_gateway(request: pytest.FixtureRequest,
                         tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Trusted]:
    options = getattr(request.module, "SHARED_GATEWAY", {})
    async with trusted_gateway(tmp_path_factory.mktemp("trusted"), request.module.RULES,
                               **options) as gw:
        yield gw


@pytest.fixture
def gw(module_gateway: Trusted) -> Trusted:
    module_gateway.upstream.arrivals.clear()
    return module_gateway

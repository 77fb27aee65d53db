"""What a user's conftest might hold: a client of the server under test.

The injection fixtures (`injection_node`, `injection_cluster`, `injection_api`,
`injection_event_stream`) come from the installed plugin; nothing to import.
"""

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session

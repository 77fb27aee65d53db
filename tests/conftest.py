"""Fixtures shared by the project's own tests: real nodes on 127.0.0.1, real HTTP."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from pytest_injection_events.node import FakeCluster, FakeNode

#: A test that hangs fails here instead of eating CI's time (pytest-timeout is in the dev extra).
TEST_TIMEOUT = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.pluginmanager.hasplugin("timeout"):
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """Every test must stop the threads it started (nodes, executors)."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leftover:
        thread.join(timeout=2)
    leftover = [t.name for t in leftover if t.is_alive()]
    assert not leftover, f"threads left running after the test: {leftover}"


@pytest.fixture(autouse=True)
def _sessions_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every aiohttp session opened during the test (by a client or a node) is closed by
    its end: a leak would otherwise only show as a warning at garbage collection."""
    opened: list[aiohttp.ClientSession] = []
    init = aiohttp.ClientSession.__init__

    def tracking_init(self: aiohttp.ClientSession, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", tracking_init)
    yield
    assert [s for s in opened if not s.closed] == []


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with FakeNode() as fake:
        yield fake


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(3) as fake:
        yield fake


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session

"""IN BETWEEN: the old test body, unchanged, with the log object swapped for the
stream-backed drop-in. The regexes keep matching the same lines, at push speed."""

import asyncio

import pytest
from scylla_log import ScyllaLogFile

from pytest_injection_events.logfile import InjectionLogFile


@pytest.mark.asyncio
async def test_write_parks_at_breakpoint(
    injection_node, injection_api, injection_event_stream, http
):
    real = ScyllaLogFile(injection_node.log_path)
    log = InjectionLogFile(injection_event_stream, injection_node, real)  # was: log = real
    mark = await log.mark()
    await injection_api.enable_injection("kv_write_before_apply", one_shot=True)

    write = asyncio.create_task(http.put(f"{injection_node.url}/kv/k", data=b"v"))
    mark, _ = await log.wait_for("kv_write_before_apply: waiting", from_mark=mark)
    async with http.get(f"{injection_node.url}/kv/k") as response:
        assert response.status == 404

    await injection_api.message_injection("kv_write_before_apply")
    await log.wait_for("kv_write_before_apply: message received", from_mark=mark)
    async with await write as response:
        assert response.status == 200

"""A synchronous test: the same stream, waited on without asyncio."""

import threading
import urllib.request


def put(url: str, value: bytes) -> int:
    request = urllib.request.Request(url, data=value, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_sync_breakpoint(injection_node, injection_api, injection_event_stream):
    api = injection_api.sync
    api.enable_injection("kv_write_before_apply", one_shot=True)

    statuses = []
    url = f"{injection_node.url}/kv/k"
    writer = threading.Thread(target=lambda: statuses.append(put(url, b"v")))
    writer.start()
    event = injection_event_stream.wait_for_injection_sync("kv_write_before_apply")
    assert event.phase == "enter"

    api.message_injection("kv_write_before_apply")
    writer.join(timeout=30)
    assert statuses == [200]

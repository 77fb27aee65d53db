"""A real aiohttp app on 127.0.0.1 with one handler, for tests that need a server's answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(handler: Any, path: str = "/") -> tuple[web.AppRunner, int]:
    """Serve `handler` for GET `path`; the caller cleans the runner up."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]

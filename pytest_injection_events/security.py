"""Who may use a node, and how they are told no (docs/http-api.md, Security).

JSON answers, the bearer token, the `Host` check against DNS rebinding and the
loopback-only bind: the middlewares and checks `InjectionServer` puts in front of
the routes, usable alone by a service that embeds them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", charset="utf-8"
    )


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    response = json_response({"error": message}, status)
    if headers:
        response.headers.update(headers)
    return response


def bearer_auth(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    # hmac.compare_digest takes a time that depends on the lengths only, never on where
    # the bytes differ. The scheme is no secret: it is matched apart, in any case (RFC
    # 9110 §11.1: `bearer` is `Bearer`). Bytes are compared as they came on the wire.
    expected = token.encode("utf-8", "surrogateescape")

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            given = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            given = b""
        if not hmac.compare_digest(given, expected) or scheme.lower() != "bearer":
            return error_response(
                401,
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="injection"'},
            )
        return await handler(request)

    return check_token


def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind_address(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host!r}: not a loopback address. The injection API lets "
            "anyone who reaches it stall the node; pass allow_remote=True (--allow-remote) "
            "if that is what you want."
        )


def _host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:80` -> `::1`, `Example.test.:80` -> `example.test`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def is_loopback_host(host: str) -> bool:
    """A Host header that names this machine only: a loopback address or `localhost`,
    with any port. No name is resolved: a page's DNS name rebound to 127.0.0.1 is not."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_check(
    allowed_hosts: Iterable[str] = (),
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware answering 403 to a request whose `Host` is neither loopback nor one of
    `allowed_hosts` (a name, any port; or `name:port`, that port only): a web page that
    rebinds its DNS name to 127.0.0.1 can then neither read nor drive the node."""
    allowed = {host.strip().lower().rstrip(".") for host in allowed_hosts}
    allowed |= {_host_name(host) for host in allowed if ":" not in host.strip("[]")}

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is not None and not is_loopback_host(host):
            given = host.strip().lower().rstrip(".")
            if given not in allowed and _host_name(host) not in allowed:
                shown = host[:200].encode("ascii", "backslashreplace").decode()
                return error_response(
                    403,
                    f"Host {shown!r} is not allowed: this node answers requests for "
                    "localhost and loopback addresses only; start it with --allowed-host "
                    "(allowed_hosts=) to add a name",
                )
        return await handler(request)

    return check_host

"""What a node and its readers agree on: paths, headers, addresses, ScyllaDB's log lines.

Server, fake node, client, log source and codemod all take these from here, so
no constant is copied between the two sides (docs/design.md).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

PREFIX = "/v2/error_injection"
EVENTS_PATH = PREFIX + "/events"
DEFAULT_PORT = 10000
TOKEN_ENV = "INJECTION_EVENTS_TOKEN"
#: Which life of which node a stream belongs to, and the last seq when it began.
BOOT_HEADER = "X-Injection-Boot"
NODE_HEADER = "X-Injection-Node"
LAST_SEQ_HEADER = "X-Injection-Last-Seq"


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def url_host(host: str) -> str:
    """A host as it stands in a URL or a node id: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def node_id(host: str, port: int) -> str:
    """A node's default id: host:port."""
    return f"{url_host(host)}:{port}"


#: A host name, an IPv4 address, or an IPv6 address (urlsplit removed its brackets).
_HOST = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%A-Za-z]*)$")


def base_url(target: str) -> str:
    """`http://host:port` from a URL, `host:port` or a bare host (then port 10000)."""
    given = target = target.strip()
    if not target:
        raise ValueError("empty node address")
    if "://" not in target:
        if target.count(":") > 1 and not target.startswith("["):
            target = f"[{target}]"  # a bare IPv6 address, such as ::1
        target = f"http://{target}"
    parts = urlsplit(target)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not re.fullmatch(r"[\w.:%-]+", parts.hostname)  # no space, quote or the like
    ):
        raise ValueError(f"not a node address: {given!r} (expected http://host:port or host)")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in node address {given!r}") from None
    if not _HOST.match(parts.hostname) or parts.path not in ("", "/"):
        raise ValueError(f"not a node address: {given!r} (expected http://host:port or host)")
    return f"{parts.scheme}://{url_host(parts.hostname)}:{port}"


def target_url(target: object) -> str:
    """The base URL of a node given as a URL, a host, or an object with a `url` or an
    `ip_addr` attribute (ScyllaDB's `ServerInfo`: REST on port 10000); `url` wins."""
    if isinstance(target, str):
        return base_url(target)
    for attribute in ("url", "ip_addr"):
        value = getattr(target, attribute, None)
        if value is not None:
            return base_url(str(value))
    raise TypeError(
        f"not a node: {target!r} (expected a URL, a host, or an object with `url` or `ip_addr`)"
    )


def node_id_of(url: str) -> str:
    """The default id of the node at a base URL: host:port."""
    return url.split("://", 1)[-1].rstrip("/")


# -- ScyllaDB's log lines ------------------------------------------------------------
#
# `LEVEL  YYYY-MM-DD HH:MM:SS,mmm [shard N:group] logger - message`; the injection
# framework (utils/error_injection.hh, logger `errinj`) writes only the messages below.

LOG_LOGGER = "errinj"
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

#: INFO lines of a breakpoint (`inject(name, wait_for_message)`).
WAITING_FOR_MESSAGE = "{name}: waiting for message"
MESSAGE_RECEIVED = "{name}: message received"
#: DEBUG lines. `Enabling injection {} "{}"` with `one-shot ` or nothing: two spaces.
ENABLING = 'Enabling injection {one_shot} "{name}"'
ONE_SHOT_WORD = "one-shot "
DISABLING = 'Disabling injection "{name}"'
DISABLING_ALL = "Disabling all injections"
TRIGGERING = 'Triggering injection "{name}"'
TRIGGERING_SLEEP = 'Triggering sleep injection "{name}" ({ms}ms)'
TRIGGERING_EXCEPTION = 'Triggering exception injection "{name}"'
TRIGGERING_HANDLER = 'Triggering injection "{name}" with injection handler'
INJECTED_PARAMETER = "Injected value [{value}] for parameter [{key}], injection [{name}]"

#: The texts after `NAME: ` that the framework writes: a log wait on `NAME: <prefix>`
#: of one of them waits for the framework's line, anything else is other code's line.
BREAKPOINT_SUFFIXES = ("waiting for message", "message received")

_LINE = re.compile(
    r"^(?P<level>[A-Z]+) +(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<millis>\d{3}) "
    r"\[shard (?P<shard>\d+)(?::[^\]]*)?\] (?P<logger>\S+) - (?P<message>.*?)\r?\n?$"
)
_FRAMEWORK_MESSAGES: tuple[tuple[re.Pattern[str], str, str | None], ...] = (
    # (message pattern, phase, kind of point); names hold any character but a quote.
    (re.compile(r"^(?P<name>.+): waiting for message$"), "enter", "wait_for_message"),
    (re.compile(r"^(?P<name>.+): message received$"), "resume", "wait_for_message"),
    (
        re.compile(r'^Triggering injection "(?P<name>[^"]+)" with injection handler$'),
        "enter",
        "handler",
    ),
    (re.compile(r'^Triggering injection "(?P<name>[^"]+)"$'), "enter", "lambda"),
    (re.compile(r'^Triggering (?:abortable )?sleep injection "(?P<name>[^"]+)"'), "enter", "sleep"),
    (re.compile(r'^Triggering exception injection "(?P<name>[^"]+)"$'), "enter", "exception"),
    (
        re.compile(r"^Injected value \[.*\] for parameter \[.*\], injection \[(?P<name>[^\]]+)\]$"),
        "enter",
        "parameter",
    ),
    (
        re.compile(r'^Enabling injection (?P<one_shot>one-shot )? "(?P<name>[^"]+)"$'),
        "enable",
        None,
    ),
    (re.compile(r'^Disabling injection "(?P<name>[^"]+)"$'), "disable", None),
)


@dataclass(frozen=True)
class LogLine:
    """One line of a ScyllaDB-format log, split."""

    level: str
    timestamp: float  # the node's clock as written: millisecond resolution, local time
    shard: int
    logger: str
    message: str


@dataclass(frozen=True)
class FrameworkLine:
    """What an injection framework line says: which injection, which phase."""

    injection: str | None  # None: `Disabling all injections`
    phase: str
    kind: str | None
    one_shot: bool | None = None


@functools.lru_cache(maxsize=256)
def _local_seconds(date: str) -> float:
    """`YYYY-MM-DD HH:MM:SS` in local time as Unix seconds. Lines of one second share it:
    the first line after an idle took 157 us in `strptime`, most of the log source's read."""
    year, month, day = int(date[0:4]), int(date[5:7]), int(date[8:10])
    hour, minute, second = int(date[11:13]), int(date[14:16]), int(date[17:19])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        raise ValueError(f"not a date: {date!r}")
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


def parse_log_line(line: str) -> LogLine | None:
    """Split a ScyllaDB log line; None for anything else (a continuation, a banner)."""
    match = _LINE.match(line)
    if match is None:
        return None
    try:
        seconds = _local_seconds(match["date"])
    except (ValueError, OverflowError):
        return None
    return LogLine(
        level=match["level"],
        timestamp=seconds + int(match["millis"]) / 1000,
        shard=int(match["shard"]),
        logger=match["logger"],
        message=match["message"],
    )


def format_log_line(level: str, timestamp: float, shard: int, message: str) -> str:
    """One ScyllaDB log line (with its newline) from the framework's logger, as a node writes it."""
    stamp = time.strftime(LOG_TIME_FORMAT, time.localtime(int(timestamp)))
    millis = int(timestamp * 1000) % 1000
    return f"{level:<5} {stamp},{millis:03d} [shard {shard}:main] {LOG_LOGGER} - {message}\n"


def parse_framework_message(message: str) -> FrameworkLine | None:
    """The injection event a message of the framework's logger stands for, if any."""
    if message == DISABLING_ALL:
        return FrameworkLine(None, "disable", None)
    for pattern, phase, kind in _FRAMEWORK_MESSAGES:
        match = pattern.match(message)
        if match is not None:
            one_shot = bool(match["one_shot"]) if phase == "enable" else None
            return FrameworkLine(match["name"], phase, kind, one_shot)
    return None

"""Named error-injection points with ScyllaDB's semantics (docs/library.md, docs/design.md).

An `Injector` belongs to one node and one asyncio loop; it is not thread-safe.
A disabled point costs one dictionary lookup. An enabled point tells every
listener (the node's `EventLog`) synchronously, before its action runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import InjectionEventsError
from .event_schema import DISABLE, ENABLE, ENTER, MESSAGE
from .injection_state import (
    DEFAULT_BREAKPOINT_TIMEOUT,
    EXCEPTION,
    HANDLER,
    KINDS,
    LAMBDA,
    PARAMETER,
    SLEEP,
    WAIT_FOR_MESSAGE,
    BreakpointTimeout,
    InjectionHandler,
    _Injection,
)
from .protocol import (
    DISABLING,
    DISABLING_ALL,
    ENABLING,
    INJECTED_PARAMETER,
    MESSAGE_RECEIVED,
    ONE_SHOT_WORD,
    TRIGGERING,
    TRIGGERING_EXCEPTION,
    TRIGGERING_HANDLER,
    TRIGGERING_SLEEP,
    WAITING_FOR_MESSAGE,
)

T = TypeVar("T")
Listener = Callable[[str, str | None, str, int | None, int, bool, Mapping[str, str]], Any]
ErrorSpec = BaseException | type[BaseException] | Callable[[], BaseException] | None

_logger = logging.getLogger("pytest_injection_events.injector")


class InjectedError(InjectionEventsError):
    """What an enabled `exception` point raises unless told otherwise."""

    def __init__(self, injection: str) -> None:
        super().__init__(f"injected error: {injection}")
        self.injection = injection


@dataclass(frozen=True)
class PointInfo:
    """A catalog entry: what a point is, for `/points` and did-you-mean hints."""

    name: str
    kind: str
    doc: str = ""


@dataclass(frozen=True)
class ShardState:
    enabled: bool
    parameters: dict[str, str]


class _Done:
    """An awaitable that is already done: what a disabled async point returns."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return iter(())  # type: ignore[return-value]  # a tuple iterator: no generator to make


_DONE = _Done()


class Injector:
    """The injection points of one node, with `shards` independent copies of their state."""

    def __init__(
        self,
        *,
        shards: int = 1,
        points: Iterable[PointInfo] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.shards = shards
        self.log = logger or _logger
        self._enabled: dict[str, _Injection] = {}  # the hot dict: holds while any shard does
        self._last: dict[str, _Injection] = {}  # counters outlive a disable until re-enable
        self._catalog: dict[str, PointInfo] = {}
        self._listeners: list[Listener] = []
        for point in points:
            self.declare(point.name, point.kind, point.doc)

    # -- listeners and catalog ------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(name, kind, phase, shard, enter_count, one_shot, parameters)`
        at every event; returns the function that removes it."""
        # Copy on write: an emit in progress keeps iterating the list it started with.
        self._listeners = [*self._listeners, listener]

        def remove() -> None:
            listeners = list(self._listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._listeners = listeners

        return remove

    def declare(self, name: str, kind: str, doc: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of point {kind!r}; expected one of {', '.join(KINDS)}")
        self._catalog[name] = PointInfo(name, kind, doc)

    def catalog(self) -> list[PointInfo]:
        return list(self._catalog.values())

    # -- control ---------------------------------------------------------------

    def enable(
        self, name: str, one_shot: bool = False, parameters: Mapping[str, str] | None = None
    ) -> None:
        """Enable on every shard; re-enabling replaces parameters and resets counters."""
        injection = self._enabled.get(name)
        if injection is None:
            injection = _Injection(name, self.shards)
            self._enabled[name] = self._last[name] = injection
        injection.one_shot = bool(one_shot)
        injection.parameters = {str(k): str(v) for k, v in (parameters or {}).items()}
        injection.enters = 0
        for shard in injection.shards:
            shard.enabled = True
            shard.enters = 0
            shard.message_base = shard.received
            shard.shared_read = max(shard.shared_read, shard.received)
        self._emit(injection, self._kind_of(name), ENABLE, None)
        self._debug(ENABLING.format(one_shot=ONE_SHOT_WORD if one_shot else "", name=name))

    def disable(self, name: str) -> None:
        """Disable on every shard and let every handler parked on it go on."""
        if self._disable(name):
            self._debug(DISABLING.format(name=name))

    def disable_all(self) -> None:
        for name in list(self._enabled):
            self._disable(name)
        self._debug(DISABLING_ALL)

    def _disable(self, name: str) -> bool:
        injection = self._enabled.pop(name, None)
        if injection is None:
            return False
        injection.released = True
        for shard in injection.shards:
            shard.enabled = False
        injection.wake()
        self._emit(injection, self._kind_of(name), DISABLE, None)
        return True

    def receive_message(self, name: str) -> None:
        """Wake handlers parked on `name` (on every shard); ignored if it is not enabled."""
        injection = self._enabled.get(name)
        if injection is None:
            return
        for shard in injection.shards:
            shard.received += 1
        injection.wake()
        self._emit(injection, self._kind_of(name), MESSAGE, None)

    # -- state -----------------------------------------------------------------

    def is_enabled(self, name: str) -> bool:
        injection = self._enabled.get(name)
        return injection is not None and injection.listed()

    def enabled_injections(self) -> list[str]:
        return [name for name, injection in self._enabled.items() if injection.listed()]

    def enter_count(self, name: str) -> int:
        injection = self._last.get(name)
        return injection.enters if injection is not None else 0

    def waiters(self, name: str) -> int:
        injection = self._enabled.get(name)
        return sum(s.parked for s in injection.shards) if injection is not None else 0

    def get_parameters(self, name: str) -> dict[str, str] | None:
        """The parameters of an enabled injection, without counting a hit."""
        injection = self._enabled.get(name)
        return dict(injection.parameters) if injection is not None else None

    def injection_state(self, name: str) -> list[ShardState]:
        """One entry per shard, as ScyllaDB's GET of one injection answers."""
        injection = self._enabled.get(name)
        if injection is None:
            return [ShardState(False, {}) for _ in range(self.shards)]
        return [ShardState(s.enabled, dict(injection.parameters)) for s in injection.shards]

    def enter_counts(self) -> dict[str, int]:
        return {name: injection.enters for name, injection in self._last.items()}

    # -- points (the hot path) -------------------------------------------------

    def inject(self, name: str, fn: Callable[[], T], shard: int = 0) -> T | None:
        """A `lambda` point: call `fn` when enabled; its result, else None.

        The disabled path is one `in` on the hot dict. `shard` is not keyword-only here:
        CPython (3.11 to 3.13) does not specialize calls to a function with keyword-only
        parameters, which made a disabled point 54 ns instead of 35 (docs/benchmarks.md)."""
        if name not in self._enabled:
            return None
        if not self._fire(self._enabled[name], LAMBDA, shard):
            return None
        self._debug(TRIGGERING.format(name=name), shard)
        return fn()

    def inject_parameter(self, name: str, key: str = "value", *, shard: int = 0) -> str | None:
        """A `parameter` point: the enabled injection's parameter `key`, else None."""
        if name not in self._enabled:
            return None
        injection = self._enabled[name]
        if not self._fire(injection, PARAMETER, shard):
            return None
        value = injection.parameters.get(key)
        self._debug(INJECTED_PARAMETER.format(value=value or "", key=key, name=name), shard)
        return value

    def inject_exception(self, name: str, error: ErrorSpec = None, *, shard: int = 0) -> None:
        """An `exception` point: raise `error` (default `InjectedError(name)`) when enabled."""
        if name not in self._enabled:
            return
        if not self._fire(self._enabled[name], EXCEPTION, shard):
            return
        self._debug(TRIGGERING_EXCEPTION.format(name=name), shard)
        if error is None:
            raise InjectedError(name)
        if isinstance(error, BaseException):
            raise error
        raise error()

    def inject_sleep(
        self,
        name: str,
        duration: float | Callable[[Mapping[str, str]], float] | None = None,
        *,
        deadline: float | None = None,
        shard: int = 0,
    ) -> Awaitable[None]:
        """A `sleep` point: sleep `duration` seconds (or a function of the parameters),
        or until `deadline` on the loop's clock."""
        injection = self._enabled.get(name)
        if injection is None:
            return _DONE
        return self._sleep(injection, duration, deadline, shard)

    def inject_handler(
        self,
        name: str,
        fn: Callable[[InjectionHandler], Awaitable[Any]],
        *,
        share_messages: bool = True,
        shard: int = 0,
    ) -> Awaitable[None]:
        """A `handler` point: run `await fn(handler)` when enabled."""
        injection = self._enabled.get(name)
        if injection is None:
            return _DONE
        return self._run_handler(injection, HANDLER, fn, share_messages, shard)

    def inject_wait_for_message(
        self, name: str, timeout: float = DEFAULT_BREAKPOINT_TIMEOUT, *, shard: int = 0
    ) -> Awaitable[None]:
        """A breakpoint: park until a message, logging ScyllaDB's lines; raise
        `BreakpointTimeout` if none comes within `timeout` seconds."""
        injection = self._enabled.get(name)
        if injection is None:
            return _DONE

        async def park(handler: InjectionHandler) -> None:
            self._log_later(logging.INFO, WAITING_FOR_MESSAGE.format(name=name), shard)
            await handler.wait_for_message(timeout)
            self._log_later(logging.INFO, MESSAGE_RECEIVED.format(name=name), shard)
            # As in ScyllaDB, the line is written before the released work goes on: yield
            # once, so the stream writer (woken first) and then this line run before it.
            await asyncio.sleep(0)

        return self._run_handler(injection, WAIT_FOR_MESSAGE, park, True, shard)

    # -- internals -------------------------------------------------------------

    def _fire(self, injection: _Injection, kind: str, shard: int, runs: bool = False) -> bool:
        """Count a hit on an enabled injection and announce it; False if it does not fire.

        `runs`: the point goes on running a handler, which keeps a one-shot alive
        (not listed, not firing again, but reachable by messages) until it ends.
        """
        try:
            if shard < 0:  # a negative index would pick a shard from the end
                raise IndexError(shard)
            state = injection.shards[shard]
        except (IndexError, TypeError):
            raise ValueError(
                f"shard {shard!r} is out of range: this injector has {self.shards} shard(s)"
            ) from None
        if not state.enabled:
            return False
        state.enters += 1
        injection.enters += 1
        if runs:
            state.running += 1
        if injection.one_shot:
            state.enabled = False
        if injection.name not in self._catalog:
            self._catalog[injection.name] = PointInfo(injection.name, kind)
        self._emit(injection, kind, ENTER, shard)
        if injection.one_shot:
            self._retire_if_done(injection)
        return True

    def _retire_if_done(self, injection: _Injection) -> None:
        """Drop a spent one-shot from the hot dict once no shard holds or runs it."""
        if injection.listed() or any(s.running for s in injection.shards):
            return
        if self._enabled.get(injection.name) is injection:
            del self._enabled[injection.name]

    async def _sleep(
        self,
        injection: _Injection,
        duration: float | Callable[[Mapping[str, str]], float] | None,
        deadline: float | None,
        shard: int,
    ) -> None:
        if not self._fire(injection, SLEEP, shard):
            return
        if deadline is not None:
            seconds = deadline - asyncio.get_running_loop().time()
        elif callable(duration):
            seconds = duration(injection.parameters)
        else:
            seconds = duration or 0.0
        seconds = max(0.0, seconds)
        self._debug(TRIGGERING_SLEEP.format(name=injection.name, ms=round(seconds * 1000)), shard)
        await asyncio.sleep(seconds)

    async def _run_handler(
        self,
        injection: _Injection,
        kind: str,
        fn: Callable[[InjectionHandler], Awaitable[Any]],
        share_messages: bool,
        shard: int,
    ) -> None:
        if not self._fire(injection, kind, shard, runs=True):
            return
        # As in ScyllaDB, a breakpoint is a handler point too: both write this line.
        self._debug(TRIGGERING_HANDLER.format(name=injection.name), shard)
        state = injection.shards[shard]
        try:
            await fn(InjectionHandler(self, injection, kind, shard, share_messages))
        finally:
            state.running -= 1
            if injection.one_shot:
                self._retire_if_done(injection)

    def _emit(self, injection: _Injection, kind: str | None, phase: str, shard: int | None) -> None:
        for listener in self._listeners:
            try:
                listener(
                    injection.name,
                    kind,
                    phase,
                    shard,
                    injection.enters,
                    injection.one_shot,
                    injection.parameters,
                )
            except Exception:
                self.log.exception("injection event listener failed")

    def _kind_of(self, name: str) -> str | None:
        point = self._catalog.get(name)
        return point.kind if point is not None else None

    def _debug(self, text: str, shard: int | None = None) -> None:
        """One of the framework's DEBUG lines, if the logger writes DEBUG at all."""
        if self.log.isEnabledFor(logging.DEBUG):
            self._log_later(logging.DEBUG, text, shard)

    def _log_later(self, level: int, text: str, shard: int | None) -> None:
        """Log ScyllaDB's line for an event just emitted, after the stream writer got it.

        Push first, then log: on a loop the line is written a callback later, so the
        event's writer (woken by the emit) runs first; without a loop it is written now.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_line(level, text, shard)
        else:
            loop.call_soon(functools.partial(self._write_line, level, text, shard))

    def _write_line(self, level: int, text: str, shard: int | None) -> None:
        self.log.log(level, "%s", text, extra={"shard": shard or 0})


__all__ = [
    "DEFAULT_BREAKPOINT_TIMEOUT",
    "EXCEPTION",
    "HANDLER",
    "KINDS",
    "LAMBDA",
    "PARAMETER",
    "SLEEP",
    "WAIT_FOR_MESSAGE",
    "BreakpointTimeout",
    "InjectedError",
    "InjectionHandler",
    "Injector",
    "PointInfo",
    "ShardState",
]

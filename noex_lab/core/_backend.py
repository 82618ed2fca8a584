"""The few event-loop primitives the runtime needs, specialised per anyio backend.

The core is written against anyio, but its hot paths (a reply future per call, a
wake-up per mailbox, a timer per timeout) are cheapest with the native primitives
of the running loop, so each backend provides them here.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from threading import get_ident
from typing import Any, Protocol

import anyio
import sniffio

from .errors import UnsupportedEventLoopError


class FutureLike(Protocol):
    """The subset of `asyncio.Future` the runtime relies on (also awaitable)."""

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def set_result(self, value: Any) -> None: ...
    def set_exception(self, exc: BaseException) -> None: ...
    def result(self) -> Any: ...
    def __await__(self) -> Generator[Any, None, Any]: ...


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class DeadlineSlots:
    """Request timeouts on asyncio with one loop timer per deadline slot, not one per request.

    A deadline is rounded up to a multiple of 1 % of the timeout (at least 1 ms, at most
    20 ms), so a request fails between `timeout` and `timeout` + 1 % (+ 20 ms at most) late,
    never early (every blocking API ends within its timeout plus a small constant; on uvloop
    2 ms more, `timer_slack`).
    Requests whose deadlines share a slot share one `TimerHandle`: a `call_later` + `cancel`
    per request (a heap push of a Python-compared handle, 2-3 us) becomes a dict lookup and a
    set add/discard.
    """

    __slots__ = ("_last", "_time", "loop", "slack", "slots")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.slack = timer_slack(loop)  # (the backend's timers add it too)
        # asyncio's own loop.time() is time.monotonic() behind a Python call: call it directly
        self._time: Callable[[], float] = (
            time.monotonic if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time else loop.time
        )
        self.slots: dict[float, set[Any]] = {}
        # the slot of the last add: (timeout, latest time it is still right for, slot). Calls
        # come in runs with the same timeout, so most adds skip the rounding and the dict.
        self._last: tuple[float, float, set[Any]] = (-1.0, -1.0, set())

    def add(self, fut: Any, timeout: float) -> set[Any]:
        """Fail `fut` with TimeoutError once `timeout` has passed; discard it from the result when done."""
        now = self._time()
        last_timeout, until, slot = self._last
        if timeout == last_timeout and now < until:  # now + timeout < due: that slot, still ahead
            slot.add(fut)
            return slot
        grain = timeout * 0.01
        if grain < 0.001:
            grain = 0.001
        elif grain > 0.02:
            grain = 0.02
        due = math.ceil((now + timeout) / grain) * grain
        found = self.slots.get(due)
        if found is None:
            found = self.slots[due] = set()
            self.loop.call_at(due + self.slack, self._expire, due)
        slot = found
        if timeout >= 0.001:  # (a slot is reused only while it is at least 1 ms ahead: never an expired one)
            self._last = (timeout, due - timeout, slot)
        slot.add(fut)
        return slot

    def _expire(self, due: float) -> None:
        for fut in self.slots.pop(due, ()):
            if not fut.done():
                fut.set_exception(TimeoutError())


def timer_slack(loop: Any) -> float:
    """Seconds to add to a timer's delay so that it never fires early on `loop`: none on
    asyncio's own loops; 2 ms on others. uvloop rounds a delay to whole milliseconds and counts
    it from libuv's millisecond clock, so a timer may fire up to 1.5 ms early: send_after timers
    armed in a loop fired up to 1.2 ms early (tests/core/test_timers_never_early.py)."""
    return 0.0 if isinstance(loop, asyncio.BaseEventLoop) else 0.002


class Backend:
    """Primitives of one running event loop."""

    name: str
    key: object
    # asyncio: request timeouts as shared deadline slots, which a hot caller may use directly
    # instead of awaiting `wait_future` (one coroutine less per call); None elsewhere
    deadlines: DeadlineSlots | None = None

    def new_future(self) -> FutureLike:
        raise NotImplementedError

    async def wait_future(self, fut: FutureLike, timeout: float | None) -> Any:
        """Await `fut`; raise builtin TimeoutError after `timeout` seconds."""
        raise NotImplementedError

    def call_later(
        self, delay: float, fn: Callable[[], None], spawn: Callable[[Callable[[], Awaitable[None]]], None]
    ) -> Cancellable:
        raise NotImplementedError

    def spawn_system_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` in the background, outside any task group, until the loop ends."""
        raise NotImplementedError

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the loop's next turn (from the loop's own thread)."""
        raise NotImplementedError

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        raise NotImplementedError


class AsyncioBackend(Backend):
    name = "asyncio"

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.key = self.loop
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadlines = self.deadlines = DeadlineSlots(self.loop)
        self._slack = self._deadlines.slack  # (a timer never fires early: `timer_slack`)
        # No Python frame of ours per future (every call makes one or two: the reply, and the
        # server's wake-up when it was idle): on asyncio's own loop the Future class itself
        # (its create_future is a Python method doing just that), else the loop's create_future
        # (uvloop's is C).
        if getattr(type(self.loop), "create_future", None) is asyncio.BaseEventLoop.create_future:
            self.new_future = functools.partial(asyncio.Future, loop=self.loop)  # type: ignore[method-assign]
        else:
            self.new_future = self.loop.create_future  # type: ignore[method-assign]

    def new_future(self) -> FutureLike:
        return self.loop.create_future()

    async def wait_future(self, fut: FutureLike, timeout: float | None) -> Any:
        if timeout is None:
            return await fut
        slot = self._deadlines.add(fut, timeout)
        try:
            return await fut
        finally:
            slot.discard(fut)

    def call_later(
        self, delay: float, fn: Callable[[], None], spawn: Callable[[Callable[[], Awaitable[None]]], None]
    ) -> Cancellable:
        return self.loop.call_later(delay + self._slack, fn)

    def spawn_system_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await fn()

        task = self.loop.create_task(run())
        self._tasks.add(task)  # strong reference until done
        task.add_done_callback(self._tasks.discard)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # loop closed: nobody is left to tell
            pass


class TrioFuture:
    """A minimal awaitable future for trio with the asyncio.Future interface we use."""

    __slots__ = ("_cancelled", "_done", "_event", "_exc", "_value")

    def __init__(self) -> None:
        import trio

        self._event = trio.Event()
        self._done = False
        self._value: Any = None
        self._exc: BaseException | None = None
        self._cancelled = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def set_result(self, value: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("future already done")
        self._value, self._done = value, True
        self._event.set()

    def set_exception(self, exc: BaseException) -> None:
        if self._done:
            raise asyncio.InvalidStateError("future already done")
        self._exc, self._done = exc, True
        self._event.set()

    def cancel(self) -> None:
        if not self._done:
            self._cancelled = self._done = True
            self._event.set()

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._value

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._done:
            try:
                yield from self._event.wait().__await__()
            except BaseException:
                self.cancel()
                raise
        return self.result()


class _TrioTimer:
    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()

    def cancel(self) -> None:
        self.scope.cancel()


class TrioBackend(Backend):
    name = "trio"

    def __init__(self) -> None:
        import trio

        self._trio = trio
        self.token = trio.lowlevel.current_trio_token()
        self.key = self.token

    def new_future(self) -> FutureLike:
        return TrioFuture()

    async def wait_future(self, fut: FutureLike, timeout: float | None) -> Any:
        if timeout is None:
            return await fut
        with self._trio.move_on_after(timeout) as scope:
            return await fut
        if scope.cancelled_caught:
            raise TimeoutError()
        return fut.result()

    def call_later(
        self, delay: float, fn: Callable[[], None], spawn: Callable[[Callable[[], Awaitable[None]]], None]
    ) -> Cancellable:
        timer = _TrioTimer()

        async def run() -> None:
            with timer.scope:
                await anyio.sleep(delay)
                fn()

        spawn(run)
        return timer

    def spawn_system_task(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._trio.lowlevel.spawn_system_task(fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.token.run_sync_soon(fn)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        try:
            self.token.run_sync_soon(fn)
        except self._trio.RunFinishedError:
            pass


def current_backend() -> Backend:
    """The backend of the running event loop (raises if called outside one)."""
    lib = sniffio.current_async_library()
    if lib == "asyncio":
        return AsyncioBackend()
    if lib == "trio":
        return TrioBackend()
    raise UnsupportedEventLoopError(f"noex_lab runs on asyncio or trio, not {lib}")


def current_loop_key() -> object:
    """Identifies the running event loop (hot: called by every facade call outside a process).

    `asyncio.get_running_loop()` makes a getpid() system call on every call (its fork check),
    which costs more than the rest of a cast. So the asyncio loop last found is remembered: it
    is still the running loop when it runs in this very thread (one thread runs one loop at a
    time), which `loop._thread_id` tells without a system call. A fork forgets it."""
    loop = _last_asyncio_loop()
    if loop is not None and loop._thread_id == get_ident():
        return loop
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        _remember_loop(loop)
        return loop
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library == "trio":
        import trio

        return trio.lowlevel.current_trio_token()
    raise UnsupportedEventLoopError("noex_lab needs a running asyncio or trio event loop")


def _no_loop() -> Any:
    return None


_last_asyncio_loop: Callable[[], Any] = _no_loop  # a weak reference to it, once there is one


def _remember_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _last_asyncio_loop
    if hasattr(loop, "_thread_id"):  # (an event loop without it, like uvloop's, is not remembered)
        _last_asyncio_loop = weakref.ref(loop)


def _forget_loop() -> None:
    global _last_asyncio_loop
    _last_asyncio_loop = _no_loop


os.register_at_fork(after_in_child=_forget_loop)

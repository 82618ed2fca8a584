"""A virtual clock: an asyncio loop whose time jumps to the next timer, and the `Clock` the
simulation's nodes read.

`VirtualTimeLoop.time()` is a number the loop advances itself: when no callback is ready, the
loop's selector is asked to wait `timeout` seconds for the earliest timer, and instead of waiting
it adds `timeout` to the clock (the idea of `looptime` and of madsim's and turmoil's schedulers).
Sleeps, heartbeats and timeouts then cost no wall time, and a run is a pure function of its
inputs: one thread, no sockets, callbacks in the loop's FIFO order.

Everything the runtime reads beyond the loop (deadlines, uptimes, timestamps, a node's
incarnation) it reads from its node's `Clock`, and every random number (back-off jitter, gossip
order, handshake nonces) comes from its node's `Entropy` (`noex_lab/core/clock.py`). A simulation
builds its nodes with `virtual_clock(loop)` and an `Entropy` on its seeded generator, through
its `SimEnvironment`: no module global is swapped, production code is untouched. What stays
outside the seam is anyio's and asyncio's own clock, which is this loop's `time()` anyway.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
from typing import Any

from ..core.clock import Clock
from ..core.errors import NoexError

__all__ = ["SimulationStuckError", "VirtualTimeLoop", "virtual_clock"]

EPOCH = 1_800_000_000.0  # the simulated wall clock at virtual time 0 (a fixed date in 2027)


class SimulationStuckError(NoexError):
    """Every task waits and no timer is set: the simulated cluster can never move again."""


class _VirtualSelector(selectors.BaseSelector):
    """The real selector (for the loop's self-pipe) polled without waiting; a wait advances the clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise SimulationStuckError(
                "every task of the simulation waits and no timer is set: nothing can ever happen again "
                "(a task waits for something outside the simulation, such as a thread or a real socket)"
            )
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()


class _OrderedTimer(asyncio.TimerHandle):
    """A timer ordered by (time, creation): asyncio's heap breaks ties between timers due at the
    same instant by its own layout, which any extra timer changes; this order does not."""

    __slots__ = ("_key",)

    def __init__(self, when: float, callback: Any, args: Any, loop: Any, context: Any, seq: int) -> None:
        super().__init__(when, callback, args, loop, context)
        self._key = (when, seq)

    def __lt__(self, other: Any) -> bool:  # (every timer of a VirtualTimeLoop is an _OrderedTimer)
        return bool(self._key < other._key)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (starts at 0.0); see the module doc."""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers = itertools.count()
        super().__init__(selector=_VirtualSelector(self))
        self._clock_resolution = 1e-9

    def call_at(self, when: float, callback: Any, *args: Any,  # type: ignore[override]
                context: Any = None) -> asyncio.TimerHandle:
        """As asyncio's, with timers due at one instant run in the order they were set."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]
        timer = _OrderedTimer(when, callback, args, self, context, next(self._timers))
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds


def virtual_clock(loop: VirtualTimeLoop) -> Clock:
    """The `Clock` of a simulation's nodes (`core/clock.py`): monotonic time is the loop's
    virtual time, wall time that plus EPOCH."""

    def wall() -> float:
        return EPOCH + loop.time()

    def wall_ns() -> int:
        return int((EPOCH + loop.time()) * 1e9)

    return Clock(monotonic=loop.time, wall=wall, wall_ns=wall_ns, perf_counter=loop.time)

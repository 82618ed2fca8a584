"""A virtual clock: an asyncio loop whose time jumps to the next timer, and the time and
randomness the runtime reads, redirected to the simulation while it runs.

`VirtualTimeLoop.time()` is a number the loop advances itself: when no callback is ready, the
loop's selector is asked to wait `timeout` seconds for the earliest timer, and instead of waiting
it adds `timeout` to the clock (the idea of `looptime` and of madsim's and turmoil's schedulers).
Sleeps, heartbeats and timeouts then cost no wall time, and a run is a pure function of its
inputs: one thread, no sockets, callbacks in the loop's FIFO order.

The runtime also reads `time.monotonic()`, `time.time()`, the `random` module and `os.urandom`
directly in a few places (dial back-off, a node's incarnation, event timestamps, handshake
nonces). `virtual_world` points the names `time`, `random` and `os` of the `noex_lab` modules at
the simulation's clock and its seeded `random.Random` for the duration of a run, and puts the
real modules back afterwards: production code keeps calling the real functions directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import random
import selectors
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

from ..core.errors import NoexError

__all__ = ["SimulationStuckError", "VirtualTimeLoop", "virtual_world"]

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


class _Clock(types.SimpleNamespace):
    """Stands in for the `time` module inside noex_lab while a simulation runs."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    perf_counter = monotonic

    def monotonic_ns(self) -> int:
        return int(self._loop.time() * 1e9)

    def time(self) -> float:
        return EPOCH + self._loop.time()

    def time_ns(self) -> int:
        return int((EPOCH + self._loop.time()) * 1e9)

    def __getattr__(self, name: str) -> Any:  # strftime, localtime, sleep, ... the real ones
        return getattr(time, name)


class _Os(types.SimpleNamespace):
    """Stands in for `os` inside noex_lab: `urandom` (handshake nonces) comes from the seed."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng

    def urandom(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class _RandomModule:
    """The `random` module as a simulation sees it: the module's functions draw from the seeded
    generator, and `Random()` makes a generator seeded from it (the fault layer keeps its own)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rng, name)

    def Random(self, seed: int | None = None) -> random.Random:
        return random.Random(self._rng.getrandbits(64) if seed is None else seed)


@contextlib.contextmanager
def virtual_world(loop: VirtualTimeLoop, rng: random.Random) -> Iterator[None]:
    """Inside: the `time`, `random` and `os` names of every loaded noex_lab module (the simulator's
    own excepted) are the simulation's clock, its seeded generator and a seeded `urandom`."""
    shims = {time: _Clock(loop), random: _RandomModule(rng), os: _Os(rng)}
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("noex_lab.") or name.startswith("noex_lab.sim") or module is None:
            continue
        namespace = vars(module)
        for attr in ("time", "random", "os"):
            real = namespace.get(attr)
            if real is not None and isinstance(real, types.ModuleType) and real in shims:
                swapped.append((namespace, attr, real))
                namespace[attr] = shims[real]
    try:
        yield
    finally:
        for namespace, attr, real in swapped:
            namespace[attr] = real

"""The time and the randomness a node reads, as two replaceable objects.

Every module of the runtime that reads the time (timers' deadlines, uptimes, event timestamps,
leases, back-off) asks its node's `Clock` (`node.clock`), and every one that draws random
numbers (a node's incarnation, dial back-off jitter, gossip order, handshake nonces, the fault
layer's dice) asks its node's `Entropy` (`node.entropy`). In production they are the `time`
module's functions themselves (`Clock()` holds `time.monotonic`, not a wrapper, so a read costs
what `time.monotonic()` costs) and a `random.Random` seeded by the OS with `os.urandom` for
nonces. The simulator (`noex_lab.sim`) builds its nodes with a clock on its virtual-time loop
and an `Entropy` drawn from the run's seed, so a seed gives one trace, bit for bit.

Not behind the seam: the liveness thread of a real node (`distribution/liveness.py`), which
must measure real time to see a blocked loop, and the event loop's own clock, which the
simulator replaces with its loop (`sim/loop.py`).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

__all__ = ["SYSTEM_CLOCK", "SYSTEM_ENTROPY", "Clock", "Entropy"]


class Clock:
    """Monotonic time (`monotonic`, `perf_counter`: seconds, for durations and deadlines) and
    wall time (`time`, `time_ns`: since the epoch, for timestamps and incarnations)."""

    __slots__ = ("monotonic", "perf_counter", "time", "time_ns")

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 wall_ns: Callable[[], int] = time.time_ns,
                 perf_counter: Callable[[], float] = time.perf_counter) -> None:
        self.monotonic = monotonic
        self.perf_counter = perf_counter
        self.time = wall
        self.time_ns = wall_ns


SYSTEM_CLOCK = Clock()


class Entropy:
    """A node's randomness: `random` draws (jitter, shuffles, choices), `token_bytes(n)` for
    nonces and ids, `new_random()` for a component that keeps a generator of its own. Without a
    generator (production): a `random.Random` seeded by the OS, and `os.urandom` for tokens;
    with one (a simulation): everything drawn from it, in the order the runtime asks."""

    __slots__ = ("_seeded", "random", "token_bytes")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._seeded = rng is not None
        self.random = rng if rng is not None else random.Random()
        self.token_bytes: Callable[[int], bytes] = self.random.randbytes if rng is not None else os.urandom

    def new_random(self) -> random.Random:
        """A generator of its own for one component: seeded from this one in a simulation."""
        return random.Random(self.random.getrandbits(64)) if self._seeded else random.Random()


SYSTEM_ENTROPY = Entropy()

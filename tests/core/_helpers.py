"""Behaviors and deadline-bounded waiting helpers shared by the core tests."""

from __future__ import annotations

from typing import Any

import anyio

from noex_lab import GenServer, RemoteMonitor, Stop
from noex_lab.core.node import Target

# Generous upper bound for anything a test waits for; the tests normally finish far sooner.
DEADLINE = 5.0


class Sink:
    """A list shared by a test and its processes or callbacks; `wait_for` waits with a deadline."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = anyio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def __call__(self, item: Any) -> None:  # usable directly as an on_down / event callback
        self.add(item)

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, timeout: float = DEADLINE) -> list[Any]:
        """Wait until at least `count` items arrived; returns a copy of all items."""
        with anyio.fail_after(timeout):
            while len(self.items) < count:  # bounded by the deadline
                await self._changed.wait()
        return list(self.items)


async def watch(target: Target) -> Sink:
    """Monitor `target` from the test; the returned sink receives its `Down`."""
    sink = Sink()
    await RemoteMonitor.monitor(target, on_down=sink)
    return sink


async def exit_reason(sink: Sink, timeout: float = DEADLINE) -> Any:
    """The reason of the first `Down` a `watch` sink received."""
    return (await sink.wait_for(1, timeout))[0].reason


class Pawn(GenServer):
    """A process to link, monitor and crash. State: an optional Sink that records terminate.

    call -> "pong"; cast "crash" -> raises; cast ("stop", reason) -> Stop(reason).
    """

    def init(self, arg: Any) -> Any:
        return arg

    def handle_call(self, msg: Any, state: Any) -> Any:
        return "pong", state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("pawn crashed on purpose")
        if isinstance(msg, tuple) and msg[0] == "stop":
            return Stop(msg[1], state)
        return state

    def terminate(self, reason: Any, state: Any) -> None:
        if isinstance(state, Sink):
            state.add(("terminate", reason))


class Collector(GenServer):
    """Records every `handle_info` message into the Sink given as arg.

    call "barrier" returns everything received so far: since a mailbox is FIFO, the answer
    includes every message delivered before the call.
    """

    def init(self, sink: Sink) -> Sink:
        return sink

    def handle_info(self, msg: Any, sink: Sink) -> Sink:
        sink.add(msg)
        return sink

    def handle_call(self, msg: Any, sink: Sink) -> Any:
        return list(sink.items), sink


class Trapper(Collector):
    """A Collector that traps exits: linked exits arrive as `Exit` messages."""

    trap_exit = True

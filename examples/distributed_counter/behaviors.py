"""A counter that one node hosts, and a client per node that uses it and watches it.

The counter is known cluster-wide as "counter" (GlobalRegistry). Each client monitors it with
`RemoteMonitor`: when the counter exits, every monitor fires exactly once with a `Down` saying
why. If the counter's *node* is lost (killed, crashed, cut off) the reason is "noconnection":
the client cannot know whether the counter still runs on the other side of a broken network,
only that it can no longer reach it. Here the clients then fail over to a new counter.
"""

from __future__ import annotations

from typing import Any

from examples.common import say
from noex_lab import (
    BehaviorRegistry,
    Cluster,
    Down,
    GenServer,
    GlobalNameConflictError,
    GlobalRegistry,
    NoexError,
    ProcessRef,
    RemoteMonitor,
    RemoteSpawn,
)

COUNTER = "counter"


class Counter(GenServer):
    """The shared count: `"incr"` adds one and answers the new value."""

    def init(self, start: int | None) -> int:
        return start or 0

    def handle_call(self, msg: Any, count: int) -> Any:
        if msg == "incr":
            return count + 1, count + 1
        if msg == "get":
            return count, count
        raise ValueError(f"unknown request {msg!r}")

    def handle_cast(self, msg: Any, count: int) -> int:
        match msg:
            case ("at_least", int(seen)):
                return max(count, seen)  # a client saw more than this counter knows (see Client)
        raise ValueError(f"unknown message {msg!r}")


class Client(GenServer):
    """Increments the counter every `every` seconds, monitoring it.

    No counter (at start, or after a Down): it takes the one registered as "counter", or starts
    one on its own node, continuing from the last value it saw. When several clients fail over
    at once, the global registration lets exactly one of them win; the others use its counter
    and tell it the last value they saw, so the count never goes back. (Increments that only
    the dead counter saw are lost: its state died with its node.)
    """

    def init(self, every: float) -> dict[str, Any]:
        GenServer.send(self.ref, "connect")
        GenServer.send(self.ref, "tick")
        return {"every": every, "counter": None, "last": 0}

    async def handle_info(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "connect":
            await self._connect(state)
        elif msg == "tick":
            await self._tick(state)
        elif isinstance(msg, Down) and msg.ref == state["counter"]:
            # The monitor's only message: the counter is gone, and `reason` says why.
            say(f"DOWN counter on {msg.ref.node} reason={msg.reason}")
            state["counter"] = None
            GenServer.send(self.ref, "connect")
        return state

    async def _connect(self, state: dict[str, Any]) -> None:
        counter = GlobalRegistry.whereis(COUNTER)
        if counter is not None and not self._reachable(counter):
            counter = None  # a replica may list it for a moment after its node was lost
        if counter is None:
            try:
                counter = await RemoteSpawn.spawn("counter", Cluster.get_local_node_id(), arg=state["last"],
                                                  name=COUNTER, registration="global")
                say(f"STARTED counter at {state['last']}")
            except GlobalNameConflictError as lost:
                counter = lost.owner if isinstance(lost.owner, ProcessRef) else None
        if counter is None or not self._reachable(counter):
            GenServer.send_after(self.ref, "connect", 0.05)  # some node still lists the lost one: retry
            return
        state["counter"] = counter
        await RemoteMonitor.monitor(counter)
        GenServer.cast(counter, ("at_least", state["last"]))
        say(f"USING counter on {counter.node}")

    async def _tick(self, state: dict[str, Any]) -> None:
        GenServer.send_after(self.ref, "tick", state["every"])
        if state["counter"] is None:
            return  # between a Down and the next counter
        try:
            state["last"] = await GenServer.call(state["counter"], "incr", timeout=1.0)
            say(f"VALUE {state['last']}")
        except NoexError as exc:
            # A failed call says only that *this call* failed; the monitor says the counter is gone.
            say(f"CALL FAILED {type(exc).__name__}")

    def _reachable(self, ref: ProcessRef) -> bool:
        return ref.node == self.node.id or any(info.id == ref.node for info in self.node.get_nodes())


BehaviorRegistry.register("counter", Counter)

"""Behaviors the cluster tests start on `noex-lab node` processes (imported with --behaviors)."""

from __future__ import annotations

import time
from typing import Any

import anyio

from noex_lab import BehaviorRegistry, Cluster, GenServer, Group, RemoteMonitor, remote_function


class Echo(GenServer):
    """Replies with what it gets; ("sleep", s) blocks the whole event loop for s seconds."""

    def init(self, arg: Any) -> Any:
        return {"count": 0, "arg": arg}

    async def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "get":
            return state["count"], state
        if msg == "arg":
            return state["arg"], state
        if msg == "crash":
            raise RuntimeError("crashed on request")
        if isinstance(msg, tuple) and msg[0] == "slow":
            await anyio.sleep(msg[1])
            return "slow done", state
        return msg, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if msg == "inc":
            state["count"] += 1
        elif msg == "reset":
            state["count"] = 0
        elif isinstance(msg, tuple) and msg[0] == "block":
            time.sleep(msg[1])  # deliberately blocks the node's event loop
        return state


BehaviorRegistry.register("echo", Echo)


class FailingInit(GenServer):
    """init always raises: remote spawns of it must report the remote reason."""

    def init(self, arg: Any) -> Any:
        raise ValueError(f"refusing to start with {arg!r}")


BehaviorRegistry.register("failing_init", FailingInit)


class Flaky(GenServer):
    """Crashes on "crash"; crashes right after init when its arg says so (a crash loop)."""

    def init(self, arg: Any) -> Any:
        if arg == "crash_loop":
            GenServer.cast(self.ref, "crash")
        return arg

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "arg":
            return state, state
        if msg == "crash":
            raise RuntimeError("flaky crash")
        return msg, state

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash loop")
        return state


BehaviorRegistry.register("flaky", Flaky)


class Watcher(GenServer):
    """Traps exits and records every info message (Down, Exit) in its state."""

    trap_exit = True

    def init(self, arg: Any) -> list[Any]:
        return []

    def handle_info(self, msg: Any, state: list[Any]) -> list[Any]:
        state.append(msg)
        return state

    async def handle_call(self, msg: Any, state: list[Any]) -> Any:
        if msg == "log":
            return list(state), state
        if isinstance(msg, tuple) and msg[0] == "monitor":
            return await RemoteMonitor.monitor(msg[1]), state
        return None, state


class SeqSink(GenServer):
    """Counts casts and checks per-sender order: ("seq", sender, i) must come as 0, 1, 2, ...
    per sender; ("blob", sender, i, data) too. Call "stats" -> counts, gaps, blob bytes."""

    def init(self, arg: Any) -> dict[str, Any]:
        return {"next": {}, "count": 0, "out_of_order": 0, "blobs": 0, "blob_bytes": 0}

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> dict[str, Any]:
        sender, index = msg[1], msg[2]
        if state["next"].get(sender, 0) != index:
            state["out_of_order"] += 1
        state["next"][sender] = index + 1
        if msg[0] == "blob":
            state["blobs"] += 1
            state["blob_bytes"] += len(msg[3])
        else:
            state["count"] += 1
        return state

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "stats":
            stats = {k: v for k, v in state.items() if k != "next"}
            return stats, state
        return msg, state


BehaviorRegistry.register("seq_sink", SeqSink)


class Grouped(GenServer):
    """Joins the group its arg names (a list: each of them) in init, as pg members usually do."""

    def init(self, arg: Any) -> Any:
        Group.join(arg, self.ref)
        return arg

    def handle_call(self, msg: Any, state: Any) -> Any:
        return msg, state


BehaviorRegistry.register("grouped", Grouped)


@remote_function
def node_name() -> str:
    """Which node runs this (a remote function runs with its node as the current node)."""
    return str(Cluster.get_local_node_id().name)


@remote_function(name="group_members")
def members_of(group: Any) -> list[Any]:
    return sorted(Group.members(group))

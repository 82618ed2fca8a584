"""The chat's processes: a Room per topic, a Session per user, a Terminal per node.

Rooms and sessions are known cluster-wide by their global names (`room:lobby`, `user:alice`),
so any node can reach them without knowing where they run. Every node imports this module,
which registers the behaviors other nodes may start here with `RemoteSpawn`.
"""

from __future__ import annotations

from typing import Any

from examples.common import say
from noex_lab import BehaviorRegistry, Down, GenServer, ProcessRef, RemoteMonitor, Stop


class Room(GenServer):
    """A chat room: its members' sessions, by user name.

    A post is fanned out with one `GenServer.cast` per member, wherever its session runs:
    the room never waits for a slow or distant member. The room monitors every session, so
    a member whose session ends, or whose node is lost, is removed without anyone asking.
    """

    def init(self, name: str) -> dict[str, Any]:
        return {"name": name, "members": {}}

    async def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        members: dict[str, ProcessRef] = state["members"]
        match msg:
            case ("join", str(user), ProcessRef() as session):
                await RemoteMonitor.monitor(session)
                members[user] = session
                self._broadcast(state, ("notice", state["name"], f"{user} joined"))
                return sorted(members), state
            case ("post", str(user), str(text)):
                self._broadcast(state, ("message", state["name"], user, text))
                return len(members), state
            case "members":
                return {user: str(session.node) for user, session in members.items()}, state
        raise ValueError(f"unknown request {msg!r}")

    def handle_info(self, msg: Any, state: dict[str, Any]) -> Any:
        if isinstance(msg, Down):
            members: dict[str, ProcessRef] = state["members"]
            for user in [u for u, session in members.items() if session == msg.ref]:
                del members[user]
                self._broadcast(state, ("notice", state["name"], f"{user} left ({msg.reason})"))
        return state

    def _broadcast(self, state: dict[str, Any], msg: tuple[Any, ...]) -> None:
        for session in state["members"].values():
            GenServer.cast(session, msg)


class Session(GenServer):
    """One user's presence in the cluster, started with `RemoteSpawn` on any node.

    It keeps what the user received and forwards every line to the user's `Terminal`, whose
    ref came in the spawn argument (refs are ordinary values). It monitors that terminal: when
    the user's node goes away the session stops, and the rooms' monitors then drop the user.
    """

    async def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        await RemoteMonitor.monitor(arg["terminal"])
        return {"user": arg["user"], "terminal": arg["terminal"], "received": []}

    def handle_call(self, msg: Any, state: dict[str, Any]) -> Any:
        if msg == "received":
            return list(state["received"]), state
        raise ValueError(f"unknown request {msg!r}")

    def handle_cast(self, msg: Any, state: dict[str, Any]) -> Any:
        match msg:
            case ("message", room, author, text):
                line = f"MSG {room} {author}: {text}"
            case ("notice", room, text):
                line = f"NOTICE {room} {text}"
            case _:
                raise ValueError(f"unknown message {msg!r}")
        state["received"].append(line)
        GenServer.cast(state["terminal"], line)
        return state

    def handle_info(self, msg: Any, state: dict[str, Any]) -> Any:
        if isinstance(msg, Down) and msg.ref == state["terminal"]:
            return Stop("normal", state)
        return state


class Terminal(GenServer):
    """Prints what a session forwards. It runs on the user's own node, so the lines appear in
    the user's terminal even when the session runs on another node."""

    def handle_cast(self, line: str, state: Any) -> Any:
        say(line)
        return state


BehaviorRegistry.register("chat_room", Room)
BehaviorRegistry.register("chat_session", Session)

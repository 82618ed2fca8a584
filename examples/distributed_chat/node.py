"""One chat user's node: `python -m examples.distributed_chat.node --name alice --user alice ...`.

It starts the user's session (on this node, or with `--session-on` on another one), opens the
room (creating it if nobody has yet), joins it, then posts every line typed on stdin.
`/who` lists the members and the node each one's session runs on. Ctrl-D or Ctrl-C leaves.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from examples.common import node_parser, run_node, say, stdin_lines, wait_for_node
from examples.distributed_chat.behaviors import Terminal
from noex_lab import (
    Cluster,
    GenServer,
    GlobalNameConflictError,
    GlobalRegistry,
    Node,
    NodeNotReachableError,
    ProcessRef,
    RemoteSpawn,
    ServerNotRunningError,
)


async def open_room(name: str) -> ProcessRef:
    """The room's global name, or a new room on this node under that name.

    Two nodes may try to create the same room at once: the GlobalRegistry lets exactly one
    registration succeed, and the loser uses the winner's room."""
    global_name = f"room:{name}"
    room = GlobalRegistry.whereis(global_name)
    if room is not None:
        return room
    try:
        return await RemoteSpawn.spawn("chat_room", Cluster.get_local_node_id(), arg=name, name=global_name,
                                       registration="global")
    except GlobalNameConflictError as lost:
        return lost.owner if isinstance(lost.owner, ProcessRef) else GlobalRegistry.lookup(global_name)


async def main(node: Node, args: argparse.Namespace) -> None:
    terminal = await GenServer.start(Terminal)
    where = args.session_on or Cluster.get_local_node_id()
    if args.session_on:
        await wait_for_node(node, args.session_on)
    try:
        # `registration="global"`: the name `user:<user>` is claimed cluster-wide, so a user can be
        # online only once; the target node starts the session and registers it atomically.
        session = await RemoteSpawn.spawn("chat_session", where, arg={"user": args.user, "terminal": terminal},
                                          name=f"user:{args.user}", registration="global")
    except GlobalNameConflictError:
        raise SystemExit(f"user {args.user} is already online") from None
    say(f"SESSION {args.user} on {session.node}")
    room = await open_room(args.room)
    members = await GenServer.call(room, ("join", args.user, session))
    say(f"JOINED {args.room} as {args.user} (room on {room.node}; members: {', '.join(members)})")

    async for line in stdin_lines():
        text = line.strip()
        try:
            if text == "/who":
                for user, host in sorted((await GenServer.call(room, "members")).items()):
                    say(f"WHO {user} on {host}")
            elif text:
                await GenServer.call(room, ("post", args.user, text))
        except (ServerNotRunningError, NodeNotReachableError) as exc:
            say(f"ERROR room {args.room} is gone ({type(exc).__name__}); restart to open it again")


def parse_args() -> argparse.Namespace:
    parser = node_parser("A chat user's node: type a line to post it to the room.")
    parser.add_argument("--user", required=True, help="your user name (one session per user in the cluster)")
    parser.add_argument("--room", default="lobby", help="the room to join (default: lobby)")
    parser.add_argument("--session-on", metavar="ID", default=None,
                        help="run your session on this node (name@host:port) instead of on yours")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(anyio.run(run_node, parse_args(), main))

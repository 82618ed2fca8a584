"""The plumbing the three example nodes share: flags, starting a node, printing, leaving.

Nothing here is specific to an example; read the examples' `node.py` and `behaviors.py` first.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus

from noex_lab import Cluster, Node, NodeId, NoexError


def say(line: str) -> None:
    """Print one line at once: the README's readers and the tests watch stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def node_parser(description: str) -> argparse.ArgumentParser:
    """The flags every example node takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", required=True, help="node name, unique in the cluster")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--seed", action="append", default=[], metavar="ID",
                        help="a member to join, as name@host:port (repeatable)")
    # Failure detection of a *silent* peer; a crashed peer (closed connection) is seen at once anyway.
    parser.add_argument("--heartbeat-interval-ms", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat-miss-threshold", type=int, default=3, help=argparse.SUPPRESS)
    return parser


async def start_node(args: argparse.Namespace) -> Node:
    """Start this process's node and print `NODE <id> pid=<pid>`."""
    node = await Cluster.start(
        args.name, host=args.host, port=args.port, seeds=args.seed,
        heartbeat_interval_ms=args.heartbeat_interval_ms, heartbeat_miss_threshold=args.heartbeat_miss_threshold,
    )
    say(f"NODE {node.id} pid={os.getpid()}")
    return node


async def wait_for_node(node: Node, peer: NodeId | str, timeout: float = 30.0) -> None:
    """Wait until `peer` is a connected member (a seed, or learned from the others by gossip)."""
    wanted = peer if isinstance(peer, NodeId) else NodeId.parse(peer)
    await wait_for(lambda: node.id == wanted or any(i.id == wanted for i in node.get_nodes()),
                   timeout, f"node {wanted}")


async def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout:g} s waiting for {what}")
        await anyio.sleep(0.02)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, until it closes. They are read by a daemon thread with `os.read`
    (no lock of `sys.stdin` held), so a node stopped by a signal exits without waiting for input."""
    send, receive = anyio.create_memory_object_stream[str | None](16)
    token = anyio.lowlevel.current_token()

    def put(line: bytes | None) -> None:
        try:
            anyio.from_thread.run(send.send, None if line is None else line.decode(errors="replace"), token=token)
        except (anyio.BrokenResourceError, RuntimeError):  # nobody reads any more: the node is stopping
            raise SystemExit from None

    def read() -> None:
        pending = b""
        while chunk := os.read(sys.stdin.fileno(), 4096):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                put(line)
        if pending:
            put(pending)
        put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    async with receive:
        async for line in receive:
            if line is None:
                return
            yield line


Body = Callable[[Node, argparse.Namespace], Awaitable[None]]


async def run_node(args: argparse.Namespace, body: Body | None = None) -> int:
    """Start this process's node and run `await body(node, args)` (default: serve forever) until it
    returns or SIGINT/SIGTERM arrives; then leave the cluster gracefully, so that peers see
    "graceful_shutdown" rather than a crash. `raise SystemExit("message")` ends with `ERROR message`.
    Returns the process's exit code."""
    node: Node | None = None
    code = 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(_cancel_on_signal, tg.cancel_scope)
            node = await start_node(args)
            if args.seed:  # seeds that are not up yet are retried in the background
                await wait_for(node.get_nodes, 30.0, f"a connection to {' or '.join(args.seed)}")
            await (body(node, args) if body is not None else anyio.sleep_forever())
            tg.cancel_scope.cancel()
    except* SystemExit as exits:
        first = exits.exceptions[0]
        reason = first.code if isinstance(first, SystemExit) else 1
        if isinstance(reason, str):
            say(f"ERROR {reason}")
            code = 1
        else:
            code = int(reason or 0)
    except* NoexError as errors:
        say(f"ERROR {errors.exceptions[0]}")
        code = 2
    finally:
        if node is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await node.stop()
            say("STOPPED")
    return code


async def _cancel_on_signal(scope: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return

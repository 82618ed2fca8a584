"""The `noex-lab` command: `node` runs a standalone node until SIGTERM/SIGINT; `top` shows a live
view of a cluster; `demo` runs a self-contained failover demonstration (both in `noex_lab.terminal`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    pass


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. `noex-lab node` starts many times over in a cluster (W6, W10), so the
    `top` and `demo` options (the terminal modules) are declared only when `command` is not `node`."""
    from .frontend.options import add_cluster_arguments, add_secret_arguments, add_tls_arguments
    from .logs import LOG_FORMATS, LOG_LEVELS
    from .version import __version__

    parser = argparse.ArgumentParser(prog="noex-lab", description="noex_lab command line")
    parser.add_argument("--version", action="version", version=f"noex-lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run a standalone node until SIGTERM/SIGINT")
    node.add_argument("--name", required=True, help="node name (letters, digits, _ and -)")
    add_cluster_arguments(node, port=4369)
    add_secret_arguments(node).add_argument(
        "--secret-stdin", action="store_true",
        help="read the cluster secret from the first line of standard input (how %%noex remote hands it "
             "over an SSH channel; combine with --exit-on-stdin-eof to hold stdin open)")
    node.add_argument("--behaviors", action="append", default=[], metavar="MODULE",
                      help="import MODULE first (it registers behaviors)")
    node.add_argument("--allow-code", action="store_true", help="accept behavior source from peers")
    node.add_argument("--allow-code-from", action="append", default=[], metavar="ID",
                      help="with --allow-code: accept it only from this node id (repeatable)")
    node.add_argument("--allow-fault-injection", action="store_true",
                      help="let authenticated peers cut and shape this node's links (%%noex partition; "
                           "needs a cluster secret)")
    node.add_argument("--partition-policy", default="none", metavar="POLICY",
                      help="none (default), keep_majority, static_quorum:N or keep_referee:NODE_ID: which side "
                           "of a partition keeps running (the other fences)")
    node.add_argument("--stable-after-ms", type=int, default=None, metavar="MS",
                      help="with a partition policy: how long the winning side waits before taking over "
                           "(default: twice the heartbeat timeout)")
    node.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                      help="largest message accepted or sent (default 64 MiB)")
    node.add_argument("--busy-limit-bytes", type=int, default=None, metavar="N",
                      help="queued bytes at which a link is busy and senders are slowed (default 1 MiB)")
    node.add_argument("--max-send-buffer-bytes", type=int, default=None, metavar="N",
                      help="queued bytes past which a link is closed as lost (default 128 MiB)")
    add_tls_arguments(node)
    node.add_argument("--exit-on-stdin-eof", action="store_true",
                      help="leave when standard input closes (for nodes launched by a parent process)")
    node.add_argument("--report", action="store_true",
                      help="print membership lines: PEERS <n> <wall_us>, UP/DOWN <peer> <wall_us> [reason], "
                           "FENCED <wall_us> <why> / UNFENCED <wall_us>")
    ops = node.add_argument_group("operations", "metrics and logs")
    ops.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics (needs noex-lab[metrics])")
    ops.add_argument("--metrics-host", metavar="HOST", help="address the metrics listen on (default: --host)")
    ops.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                     help="log lines on stderr: text, or one JSON object per line")
    ops.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="event loop: uvloop when installed (noex-lab[fast]) unless asyncio is asked for")
    ops.add_argument("--log-level", choices=LOG_LEVELS, default="warning",
                     help="info adds node transitions (up, down, busy, available); warning: refusals, "
                          "overloads and errors only")
    top_parser = sub.add_parser("top", help="live terminal view of a cluster's members, processes and events")
    demo_parser = sub.add_parser(
        "demo", help="local demonstration: node processes, a distributed supervisor, a node killed, failover")
    if command != "node":
        from .terminal import demo, top

        top.add_arguments(top_parser)
        demo.add_arguments(demo_parser)
    return parser


def _wall_us() -> int:
    return time.time_ns() // 1000


def _print(*lines: str) -> None:
    """Write `lines` with one flush (one write to the pipe)."""
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


async def _run_node(args: argparse.Namespace) -> int:
    from .distribution.attached import require_distribution
    from .distribution.cluster import Cluster
    from .frontend.child_protocol import Listening, Metrics, PeerDown, Peers, PeerUp, format_line
    from .frontend.options import cluster_options, secret_from_args, tls_from_args
    from .frontend.signals import wait_for_signal
    from .logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.behaviors:
        importlib.import_module(module)
    node = await Cluster.start(
        args.name, **cluster_options(args), cluster_secret=secret_from_args(args), tls=tls_from_args(args),
        allow_code=args.allow_code, allow_code_from=args.allow_code_from, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, allow_fault_injection=args.allow_fault_injection,
        partition_policy=args.partition_policy, stable_after_ms=args.stable_after_ms,
        **{key: value for key in ("max_message_bytes", "busy_limit_bytes", "max_send_buffer_bytes")
           if (value := getattr(args, key)) is not None},
    )
    if args.report:
        membership = require_distribution(node).membership  # (counting members: no records built per join)

        def up(info: Any) -> None:
            now = _wall_us()
            _print(format_line(PeerUp(info.id, now)), format_line(Peers(membership.member_count(), now)))

        def down(peer: Any, reason: str) -> None:
            now = _wall_us()
            _print(format_line(PeerDown(peer, now, reason)), format_line(Peers(membership.member_count(), now)))

        def fencing(event: Any) -> None:
            if event.kind == "node_fenced":
                _print(f"FENCED {_wall_us()} {event.data.get('reason', '')}")
            elif event.kind == "node_unfenced":
                _print(f"UNFENCED {_wall_us()}")

        node.on_node_up(up)
        node.on_node_down(down)
        node.events.subscribe(fencing)
    async with anyio.create_task_group() as tg:
        async def wait_signal(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            await wait_for_signal(signal.SIGTERM, signal.SIGINT, task_status=task_status)
            tg.cancel_scope.cancel()

        async def wait_stdin_eof() -> None:
            # A daemon thread, not anyio.to_thread: a worker thread blocked in read() would keep
            # the interpreter from exiting after SIGTERM until stdin closed.
            token = anyio.lowlevel.current_token()
            eof = anyio.Event()
            fd = sys.stdin.fileno()

            def read_until_eof() -> None:
                # os.read on the descriptor: a buffered sys.stdin read would hold its lock at shutdown
                with contextlib.suppress(OSError, ValueError):
                    while os.read(fd, 65536):
                        pass
                with contextlib.suppress(Exception):  # the loop may be gone already
                    anyio.from_thread.run_sync(eof.set, token=token)

            threading.Thread(target=read_until_eof, name="noex-stdin-eof", daemon=True).start()
            await eof.wait()
            tg.cancel_scope.cancel()

        await tg.start(wait_signal)  # handlers in place before NODE: a SIGTERM right after it is graceful
        if args.exit_on_stdin_eof:
            tg.start_soon(wait_stdin_eof)
        assert node.id is not None  # (a started cluster node has its id)
        _print(format_line(Listening(node.id)))
        metrics = require_distribution(node).metrics
        if metrics is not None:
            _print(format_line(Metrics(metrics.url)))
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        await node.stop()
    return 0


def _loop_options(loop: str) -> dict[str, Any]:
    """anyio's asyncio options for `--loop`: uvloop when asked for, or (auto) when installed."""
    if loop == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        if loop == "uvloop":
            raise SystemExit("noex-lab: --loop uvloop needs uvloop: pip install 'noex-lab[fast]'")
        return {}
    return {"use_uvloop": True}


def main(argv: Sequence[str] | None = None) -> int:
    from .core.errors import NoexError

    words = sys.argv[1:] if argv is None else list(argv)
    args = _parser(words[0] if words else None).parse_args(words)
    try:
        if args.command == "node":
            return int(anyio.run(_run_node, args, backend_options=_loop_options(args.loop)))
        from .terminal import demo, top

        if args.command == "top":
            return top.main(args)
        if args.command == "demo":
            return demo.main(args)
    except NoexError as exc:
        print(f"noex-lab: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

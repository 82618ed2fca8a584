"""The `noex-lab` command: `node` runs a standalone node until SIGTERM/SIGINT; `top` shows a live
view of a cluster; `demo` runs a self-contained failover demonstration (both in `noex_lab.terminal`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    from .distribution.transport import TLSConfig


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .logs import LOG_FORMATS, LOG_LEVELS

    parser = argparse.ArgumentParser(prog="noex-lab", description="noex_lab command line")
    parser.add_argument("--version", action="version", version=f"noex-lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run a standalone node until SIGTERM/SIGINT")
    node.add_argument("--name", required=True, help="node name (letters, digits, _ and -)")
    node.add_argument("--port", type=int, default=4369, help="TCP (and liveness UDP) port; 0 = free port")
    node.add_argument("--host", default="127.0.0.1", help="address to listen on")
    node.add_argument("--advertise-host", default=None, help="address peers dial (when --host is 0.0.0.0)")
    node.add_argument("--seed", action="append", default=[], metavar="ID", help="seed node id name@host:port")
    add_secret_arguments(node).add_argument(
        "--secret-stdin", action="store_true",
        help="read the cluster secret from the first line of standard input (how %%noex remote hands it "
             "over an SSH channel; combine with --exit-on-stdin-eof to hold stdin open)")
    node.add_argument("--behaviors", action="append", default=[], metavar="MODULE",
                      help="import MODULE first (it registers behaviors)")
    node.add_argument("--allow-code", action="store_true", help="accept behavior source from peers")
    node.add_argument("--allow-code-from", action="append", default=[], metavar="ID",
                      help="with --allow-code: accept it only from this node id (repeatable)")
    node.add_argument("--heartbeat-interval-ms", type=int, default=5000)
    node.add_argument("--heartbeat-miss-threshold", type=int, default=3)
    node.add_argument("--partition-policy", default="none", metavar="POLICY",
                      help="none (default), keep_majority, static_quorum:N or keep_referee:NODE_ID: which side "
                           "of a partition keeps running (the other fences)")
    node.add_argument("--stable-after-ms", type=int, default=None, metavar="MS",
                      help="with a partition policy: how long the winning side waits before taking over "
                           "(default: twice the heartbeat timeout)")
    node.add_argument("--insecure", action="store_true",
                      help="allow a non-loopback bind with --no-secret (anyone who reaches it can run code)")
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
    from .terminal import demo, top

    top.add_arguments(sub.add_parser("top", help="live terminal view of a cluster's members, processes and events"))
    demo.add_arguments(sub.add_parser(
        "demo", help="local demonstration: node processes, a distributed supervisor, a node killed, failover"))
    return parser


def add_secret_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--secret-env", metavar="VAR",
                       help="environment variable holding the cluster secret (default: the per-user secret file "
                            "$XDG_CONFIG_HOME/noex-lab/secret, created on first use)")
    group.add_argument("--no-secret", action="store_true",
                       help="no cluster secret: every local user (and with --insecure, anyone) can connect")
    return group


def secret_from_args(args: argparse.Namespace) -> str | None:
    """The secret `--secret-env` names, none with `--no-secret` (with a warning), else the per-user
    secret file (created on first use). Warns about `--insecure` on a non-loopback address."""
    from .distribution.cluster import is_loopback
    from .distribution.user_secret import SecretFileError, load_or_create, secret_path

    if getattr(args, "insecure", False) and not is_loopback(args.host):
        warn(f"--insecure on {args.host}: without a secret, anyone who can reach this address can start "
             "processes and run code here")
    if args.secret_env:
        return secret_from_env(args.secret_env)
    if getattr(args, "secret_stdin", False):
        return secret_from_stdin()
    if args.no_secret:
        warn("--no-secret: links are not authenticated; any local user (anyone, on a non-loopback "
             f"address) can join and run code here. Without it the secret in {secret_path()} is used")
        return None
    try:
        return load_or_create()
    except SecretFileError as exc:
        raise SystemExit(f"noex-lab: {exc}") from None


def warn(text: str) -> None:
    print(f"noex-lab: warning: {text}", file=sys.stderr, flush=True)


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS", "mutual TLS on every node link, from PEM files (give all three)")
    group.add_argument("--tls-cert", metavar="PEM", help="this node's certificate (chain)")
    group.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    group.add_argument("--tls-ca", metavar="PEM", help="the CA that signed every member's certificate")


def tls_from_args(args: argparse.Namespace) -> TLSConfig | None:
    """The TLSConfig the --tls-* flags ask for, or None; exits with a clear message if unusable."""
    from .distribution.transport import TLSConfig

    files = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(files.values()):
        return None
    missing = [flag for flag, path in files.items() if not path]
    if missing:
        raise SystemExit(
            f"noex-lab: TLS needs --tls-cert, --tls-key and --tls-ca together; missing {', '.join(missing)}"
        )
    try:
        return TLSConfig.from_files(args.tls_cert, args.tls_key, args.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"noex-lab: cannot load the TLS files: {exc}") from None


def _wall_us() -> int:
    return time.time_ns() // 1000


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def secret_from_env(var: str | None) -> str | None:
    """The cluster secret from environment variable `var` (never from the command line)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise SystemExit(f"noex-lab: environment variable {var} (--secret-env) is not set or empty")
    return value


MAX_SECRET_LINE = 4096


def secret_from_stdin() -> str:
    """The first line of standard input, read byte by byte from the descriptor so nothing after
    it is consumed (stdin then stays open for `--exit-on-stdin-eof`). Never echoed or logged."""
    line = bytearray()
    with contextlib.suppress(OSError):
        while len(line) <= MAX_SECRET_LINE:
            byte = os.read(sys.stdin.fileno(), 1)
            if not byte or byte == b"\n":
                break
            line += byte
    if len(line) > MAX_SECRET_LINE:
        raise SystemExit(f"noex-lab: --secret-stdin: the secret line is longer than {MAX_SECRET_LINE} bytes")
    secret = line.decode("utf-8", "replace").strip()
    if not secret:
        raise SystemExit("noex-lab: --secret-stdin: standard input ended before a secret line")
    return secret


async def _run_node(args: argparse.Namespace) -> int:
    from .distribution.cluster import Cluster
    from .logs import configure_logging

    configure_logging(args.log_format, args.log_level)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.behaviors:
        importlib.import_module(module)
    node = await Cluster.start(
        args.name, host=args.host, port=args.port, seeds=args.seed, cluster_secret=secret_from_args(args),
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        heartbeat_miss_threshold=args.heartbeat_miss_threshold, advertise_host=args.advertise_host,
        allow_code=args.allow_code, allow_code_from=args.allow_code_from, insecure=args.insecure,
        tls=tls_from_args(args), max_send_buffer_bytes=args.max_send_buffer_bytes,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        partition_policy=args.partition_policy, stable_after_ms=args.stable_after_ms,
        **{key: value for key in ("max_message_bytes", "busy_limit_bytes")
           if (value := getattr(args, key)) is not None},
    )
    if args.report:
        def up(info: Any) -> None:
            _print(f"UP {info.id} {_wall_us()}")
            _print(f"PEERS {len(node.get_nodes())} {_wall_us()}")

        def down(peer: Any, reason: str) -> None:
            _print(f"DOWN {peer} {_wall_us()} {reason}")
            _print(f"PEERS {len(node.get_nodes())} {_wall_us()}")

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
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    break
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
        _print(f"NODE {node.id}")
        if node.distribution.metrics is not None:
            _print(f"METRICS {node.distribution.metrics.url}")
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
    from .terminal import demo, top

    args = _parser().parse_args(argv)
    try:
        if args.command == "node":
            return int(anyio.run(_run_node, args, backend_options=_loop_options(args.loop)))
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

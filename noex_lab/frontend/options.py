"""One option group for every front end that starts a node: `noex-lab node`, `noex-lab top` and
`%noex start` declare the cluster settings here, with the defaults of `ClusterConfig` (written
once, there) and its units (milliseconds for the heartbeat, as `heartbeat_interval_ms`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
import sys
from typing import TYPE_CHECKING, Any

from ..distribution.cluster import HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD

if TYPE_CHECKING:
    from ..distribution.transport import TLSConfig

MAX_SECRET_LINE = 4096


def add_cluster_arguments(parser: argparse.ArgumentParser, *, port: int | None, seeds: bool = True,
                          insecure: bool = True) -> None:
    """--host, --advertise-host, --port (when `port` is its default), --seed (repeatable),
    --heartbeat-interval-ms, --heartbeat-miss-threshold and --insecure."""
    if port is not None:
        parser.add_argument("--port", type=int, default=port,
                            help=f"TCP (and liveness UDP) port; 0 = a free port (default {port})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--advertise-host", default=None, metavar="A",
                        help="address peers dial (when --host is 0.0.0.0)")
    if seeds:
        parser.add_argument("--seed", action="append", default=[], metavar="ID",
                            help="seed node id name@host:port (repeatable)")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=HEARTBEAT_INTERVAL_MS, metavar="MS",
                        help=f"liveness heartbeat period; every member uses the same (default {HEARTBEAT_INTERVAL_MS})")
    parser.add_argument("--heartbeat-miss-threshold", type=int, default=HEARTBEAT_MISS_THRESHOLD, metavar="N",
                        help=f"missed heartbeats before a peer is down (default {HEARTBEAT_MISS_THRESHOLD})")
    if insecure:
        parser.add_argument("--insecure", action="store_true",
                            help="allow a non-loopback bind without a secret (anyone who reaches it can run code)")


def cluster_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Cluster.start` options the flags of `add_cluster_arguments` hold."""
    options: dict[str, Any] = {
        "host": args.host, "advertise_host": args.advertise_host,
        "heartbeat_interval_ms": args.heartbeat_interval_ms,
        "heartbeat_miss_threshold": args.heartbeat_miss_threshold,
    }
    for key in ("port", "insecure"):
        if hasattr(args, key):
            options[key] = getattr(args, key)
    if hasattr(args, "seed") and isinstance(args.seed, list):
        options["seeds"] = args.seed
    return options


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
    from ..distribution.cluster import is_loopback
    from ..distribution.user_secret import SecretFileError, load_or_create, secret_path

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


def secret_from_env(var: str | None) -> str | None:
    """The cluster secret from environment variable `var` (never from the command line)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise SystemExit(f"noex-lab: environment variable {var} (--secret-env) is not set or empty")
    return value


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


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS", "mutual TLS on every node link, from PEM files (give all three)")
    group.add_argument("--tls-cert", metavar="PEM", help="this node's certificate (chain)")
    group.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    group.add_argument("--tls-ca", metavar="PEM", help="the CA that signed every member's certificate")


def tls_from_args(args: argparse.Namespace) -> TLSConfig | None:
    """The TLSConfig the --tls-* flags ask for, or None; exits with a clear message if unusable."""
    from ..distribution.transport import TLSConfig

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

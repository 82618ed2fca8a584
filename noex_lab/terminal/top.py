"""`noex-lab top [SEED_ID]`: a live terminal view of a cluster, from a hidden observer node.

Without SEED_ID it attaches to the node of the newest notebook that ran `%noex start` with the
per-user secret (see `noex_lab.distribution.notebook_nodes`).

The observer (`Cluster.start(..., hidden=True)`) connects to every member but is never listed,
gossiped or given children. Modes:

* default: a live rich view, refreshed every `--interval` seconds and at once on membership changes;
* `--once`: print one rendering and exit;
* `--json`: print one JSON document and exit;
* `--jsonl`: print one JSON document per refresh (one line each) until interrupted.

SIGINT (Ctrl-C), SIGTERM and SIGHUP end it cleanly: the observer node leaves and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import HandshakeRefusedError  # a member refused the login: retrying would not help
from ..core.timeouts import seconds_argument
from ..distribution.attached import distribution_of
from ..frontend.options import (
    add_cluster_arguments,
    add_secret_arguments,
    add_tls_arguments,
    cluster_options,
    secret_from_args,
    tls_from_args,
)
from ..frontend.signals import run_until_signal
from .common import Waker, log_to

if TYPE_CHECKING:
    from ..core.node import Node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seed", metavar="SEED_ID", nargs="?",
                        help="any live member, name@host:port (default: the node of the newest notebook "
                             "started with %%noex start and the per-user secret)")
    add_secret_arguments(parser)
    parser.add_argument("--interval", type=seconds_argument, default=1.0, metavar="S", help="seconds between refreshes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one rendering and exit")
    mode.add_argument("--json", action="store_true", help="print one JSON document and exit")
    mode.add_argument("--jsonl", action="store_true", help="print a JSON document per refresh (one per line)")
    parser.add_argument("--events", type=int, default=12, metavar="N", help="recent events shown (JSON: 50)")
    parser.add_argument("--connect-timeout", type=seconds_argument, default=10.0, metavar="S",
                        help="give up when no member is reachable within S seconds")
    add_cluster_arguments(parser, port=None, seeds=False)  # (the observer listens on a free port)
    add_tls_arguments(parser)


async def wait_for_members(node: Node, *, timeout: float, settle: float = 0.5, cap: float = 5.0) -> bool:
    """Wait for the first member, then until the member set stopped growing for `settle` seconds
    (the seed's gossip names the others, which the observer then dials). False if none came;
    `HandshakeRefusedError` at once when a member refused the login (a refusal does not heal by retrying)."""
    deadline = time.monotonic() + timeout
    dist = distribution_of(node)
    refusals = dist.transport.refusals if dist is not None else []
    while not node.get_nodes():
        if refusals:
            raise HandshakeRefusedError(refusals[-1])
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.02)
    seen = {info.id for info in node.get_nodes()}
    changed_at = first = time.monotonic()
    while time.monotonic() - changed_at < settle and time.monotonic() - first < cap:
        await anyio.sleep(0.02)
        now_ids = {info.id for info in node.get_nodes()}
        if now_ids != seen:
            seen, changed_at = now_ids, time.monotonic()
    return True


def notebook_seed(args: argparse.Namespace) -> str:
    """The node of the newest live notebook that advertised itself (see notebook_nodes); without
    one, exit saying the exact command to run instead."""
    from ..distribution.notebook_nodes import advertised, nodes_dir

    if args.secret_env or args.no_secret:
        raise SystemExit("noex-lab top: with --secret-env or --no-secret, give the SEED_ID of a member "
                         "(name@host:port): only notebooks using the per-user secret are found by themselves")
    found = advertised()
    if not found:
        raise SystemExit(
            f"noex-lab top: no notebook cluster found (none advertised in {nodes_dir()}). In a notebook run "
            "`%load_ext noex_lab` and `%noex start NAME` (it prints the command that attaches), or give a "
            "member: noex-lab top NAME@HOST:PORT [--secret-env VAR]")
    if len(found) > 1:
        others = ", ".join(entry["node"] for entry in found[1:])
        print(f"noex-lab top: attaching to the newest notebook's node {found[0]['node']} (others: {others})",
              file=sys.stderr)
    return str(found[0]["node"])


def _write_line(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


async def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from ..distribution.cluster import Cluster
    from .view import ClusterWatch, render_view

    if args.interval <= 0:
        raise SystemExit("noex-lab top: --interval must be > 0")
    if args.seed is None:
        args.seed = notebook_seed(args)
    console = Console()
    node = await Cluster.start(
        f"top-{os.getpid()}", **cluster_options(args), port=0, seeds=[args.seed], cluster_secret=secret_from_args(args),
        hidden=True, tls=tls_from_args(args),
    )
    watch = ClusterWatch(node)
    watch.start()
    waker = Waker()
    watch.on_change(waker.wake)
    snapshot_timeout = max(0.5, min(2.0, args.interval))

    async def main() -> int:
        try:
            reached = await wait_for_members(node, timeout=args.connect_timeout)
        except HandshakeRefusedError as exc:
            print(f"noex-lab top: {args.seed} refused the login: {exc} (use the cluster's secret: "
                  "--secret-env VAR, or the per-user secret file of the user running it)", file=sys.stderr)
            return 2
        if not reached:
            print(f"noex-lab top: no member reachable through {args.seed} within {args.connect_timeout:g} s "
                  "(is it running? same --secret-env and heartbeat settings?)", file=sys.stderr)
            return 2
        await watch.refresh(snapshot_timeout)
        if args.json:
            _write_line(json.dumps(watch.to_json(events=max(args.events, 50)), indent=2))
            return 0
        if args.once:
            console.print(render_view(watch, events=args.events))
            return 0
        if args.jsonl:
            while True:
                _write_line(json.dumps(watch.to_json(events=max(args.events, 50))))
                await waker.wait(args.interval)
                await watch.refresh(snapshot_timeout)
        log_to(console)
        with Live(render_view(watch, events=args.events), console=console, auto_refresh=False,
                  vertical_overflow="crop") as live:
            while True:
                await waker.wait(args.interval)
                await watch.refresh(snapshot_timeout)
                live.update(render_view(watch, events=args.events), refresh=True)

    try:
        return await run_until_signal(main, quit_key=not (args.json or args.once or args.jsonl))
    finally:
        watch.close()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await node.stop()


def main(args: argparse.Namespace) -> int:
    code: Any = anyio.run(run, args)
    return int(code)

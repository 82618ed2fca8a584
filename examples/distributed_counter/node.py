"""A counter node: `python -m examples.distributed_counter.node --name a ...`.

Every node runs a `Client`; the first one finds no counter and starts it on its node. Kill that
node (`kill -9`) and watch the other nodes print a Down with reason "noconnection", then agree
on a new counter.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from examples.common import node_parser, run_node
from examples.distributed_counter.behaviors import Client
from noex_lab import GenServer, Node


async def main(node: Node, args: argparse.Namespace) -> None:
    client = await GenServer.start(Client, args.every_ms / 1000)
    try:
        await anyio.sleep_forever()  # the client works on its own, until Ctrl-C
    finally:
        with anyio.CancelScope(shield=True):
            await GenServer.stop(client)  # first, or it would fail over while this node shuts down


def parse_args() -> argparse.Namespace:
    parser = node_parser("A node that increments a shared counter and fails over when the counter's node dies.")
    parser.add_argument("--every-ms", type=int, default=1000, help="increment every MS milliseconds")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(anyio.run(run_node, parse_args(), main))

"""What a `noex-lab node` child prints on stdout for the process that started it: one typed
record per line, written by `format_line` (in `cli.py`) and read by `parse_line` (the lab's
launchers, `noex-lab demo`, `noex_lab.testing` and the benchmarks), so no reader splits the
text itself.

    NODE <node id>                     Listening: the node listens (and is ready)
    METRICS <url>                      Metrics: the Prometheus endpoint (`--metrics-port`)
    UP <peer> <wall_us>                PeerUp      (`--report` only)
    DOWN <peer> <wall_us> <reason>     PeerDown    (`--report` only)
    PEERS <count> <wall_us>            Peers: the connected peers after a change (`--report` only)

`wall_us` is the child's wall clock (CLOCK_REALTIME) in microseconds. Any other line is the
node's own output (a user's print): `parse_line` returns None for it."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import InvalidArgumentError
from ..core.node_id import NodeId


@dataclass(frozen=True)
class Listening:
    node: NodeId


@dataclass(frozen=True)
class Metrics:
    url: str


@dataclass(frozen=True)
class PeerUp:
    peer: NodeId
    wall_us: int


@dataclass(frozen=True)
class PeerDown:
    peer: NodeId
    wall_us: int
    reason: str


@dataclass(frozen=True)
class Peers:
    count: int
    wall_us: int


ChildLine = Listening | Metrics | PeerUp | PeerDown | Peers


def format_line(record: ChildLine) -> str:
    """The line `record` is printed as."""
    if isinstance(record, Listening):
        return f"NODE {record.node}"
    if isinstance(record, Metrics):
        return f"METRICS {record.url}"
    if isinstance(record, PeerUp):
        return f"UP {record.peer} {record.wall_us}"
    if isinstance(record, PeerDown):
        return f"DOWN {record.peer} {record.wall_us} {record.reason}"
    return f"PEERS {record.count} {record.wall_us}"


def parse_line(line: str) -> ChildLine | None:
    """The record `line` holds, or None for any other output (never raises)."""
    word, _, rest = line.strip().partition(" ")
    fields = rest.split()
    try:
        if word == "NODE" and len(fields) == 1:
            return Listening(NodeId.parse(fields[0]))
        if word == "METRICS" and len(fields) == 1:
            return Metrics(fields[0])
        if word == "UP" and len(fields) == 2:
            return PeerUp(NodeId.parse(fields[0]), int(fields[1]))
        if word == "DOWN" and len(fields) == 3:
            return PeerDown(NodeId.parse(fields[0]), int(fields[1]), fields[2])
        if word == "PEERS" and len(fields) == 2:
            return Peers(int(fields[0]), int(fields[1]))
    except (InvalidArgumentError, ValueError):
        return None
    return None

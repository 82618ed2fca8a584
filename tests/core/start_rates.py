"""Run by `test_scale` in a fresh interpreter, as W8 runs: `python -m tests.core.start_rates
plain|children N` starts N processes one after another on a fresh node, with
`GenServer.start` (plain) or as children of a simple_one_for_one supervisor
(`Supervisor.start_child`), and prints `CPU <seconds>`: the CPU time they took."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from noex_lab import ChildSpec, GenServer, Supervisor


class Idle(GenServer):
    def init(self, arg: Any) -> Any:
        return arg


async def main(kind: str, n: int) -> None:
    sup = await Supervisor.start("simple_one_for_one", [ChildSpec("worker", Idle, restart="temporary")])
    await GenServer.stop(await GenServer.start(Idle, -1))  # warm-up, as in W8
    await GenServer.stop(await Supervisor.start_child(sup, -1))
    clock = time.process_time
    started = clock()
    if kind == "plain":
        for i in range(n):
            await GenServer.start(Idle, i)
    else:
        for i in range(n):
            await Supervisor.start_child(sup, i)
    took = clock() - started
    children = await Supervisor.count_children(sup)
    if children != (n if kind == "children" else 0):
        raise SystemExit(f"the supervisor has {children} children after {n} {kind} starts")
    print(f"CPU {took}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]))

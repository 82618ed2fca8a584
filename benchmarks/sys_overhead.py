#!/usr/bin/env python3
"""What the live process tools cost the process loop: local casts per second to a counter,
with statistics off (the default: the loop is unchanged) and on (handlers timed, messages out
counted), and a process relaying every message to another (messages out on its hot path).

    python benchmarks/sys_overhead.py [--messages N] [--rounds R] [--repo PATH]

`--repo` runs against another checkout (e.g. the main branch, to compare with statistics off).
Prints the median of R rounds per case, in microseconds per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repo", help="import noex_lab from this checkout")
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    if args.repo:
        sys.path.insert(0, args.repo)
    import anyio

    from noex_lab import GenServer, Node

    class Counter(GenServer):
        def handle_call(self, msg: Any, state: int) -> Any:
            return state, state

        def handle_cast(self, msg: Any, state: int) -> int:
            return state + 1

    class Relay(GenServer):
        def handle_call(self, msg: Any, state: Any) -> Any:
            return None, state

        def handle_cast(self, msg: Any, state: Any) -> Any:
            GenServer.cast(state, msg)
            return state

    async def casts(ref: Any, n: int) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            GenServer.cast(ref, i)
            if i % 1000 == 999:
                await anyio.sleep(0)
        await GenServer.call(ref, "sync", timeout=60)
        return (time.perf_counter() - t0) / n * 1e6

    async def case(kind: str, stats: bool, n: int) -> float:
        node = await Node().start()
        try:
            counter = await GenServer.start(Counter, 0)
            target = counter if kind == "counter" else await GenServer.start(Relay, counter)
            if stats:
                from noex_lab import Sys

                await Sys.statistics(target, enable=True)
            result = await casts(target, n)
            if kind == "relay":
                await GenServer.call(counter, "sync", timeout=60)
            return result
        finally:
            await node.stop()

    cases = [("counter", False), ("relay", False)]
    try:
        from noex_lab import Sys  # noqa: F401

        cases += [("counter", True), ("relay", True)]
    except ImportError:  # a checkout without the process tools
        pass
    results: dict[tuple[str, bool], list[float]] = {c: [] for c in cases}

    async def run() -> None:
        for _ in range(args.rounds):
            for kind, stats in cases:
                results[(kind, stats)].append(await case(kind, stats, args.messages))

    anyio.run(run, backend=args.backend)
    import noex_lab

    print(f"noex_lab from {noex_lab.__file__}, {args.messages} casts, median of {args.rounds} rounds")
    for (kind, stats), values in results.items():
        print(f"  {kind:<8} statistics {'on ' if stats else 'off'}  {statistics.median(values):.3f} us/message")


if __name__ == "__main__":
    main()

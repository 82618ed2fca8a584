"""Behaviors module for measuring a node's CPU while a mesh forms (benchmark code only, never in
noex_lab): `noex-lab node --report --behaviors benchmarks.mesh_probe`.

It registers no behavior. When its node prints `NODE <id>` or `PEERS <n> ...`, it also prints
`CPU <process CPU ns> <that line>` on stderr (`time.process_time_ns`: every thread of the
process), so `benchmarks/mesh_cost.py` can split a node's CPU into its start (exec to NODE) and
its share of the mesh (NODE to PEERS N-1); with `NOEX_BENCH_MESH_N=N` only at NODE and at
PEERS N-1. With `NOEX_BENCH_MESH_COUNTS=1` as well it counts, until the node sees N-1 peers,
the dials, accepted handshakes, frames sent by kind and the CPU of a few membership methods
(printed as `COUNTS {json}` then); with `NOEX_BENCH_PROFILE=PATH` the node runs under cProfile
(CPU time of the loop's thread) from this import until then, stats written to PATH.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

PROFILE_ENV = "NOEX_BENCH_PROFILE"
MESH_N_ENV = "NOEX_BENCH_MESH_N"
COUNTS_ENV = "NOEX_BENCH_MESH_COUNTS"

counts: Counter[str] = Counter()
_done: list[Callable[[], None]] = []


def _probe(write: Callable[..., None], mesh_n: int | None) -> Callable[..., None]:
    mesh_line = f"PEERS {mesh_n - 1} " if mesh_n is not None else "PEERS "

    def print_line(*lines: str) -> None:
        for line in lines:
            if line.startswith(("NODE ", mesh_line)):
                cpu_ns = time.process_time_ns()
                times = os.times()
                split = {"user": times.user, "system": times.system, **_threads()}
                sys.stderr.write(f"CPU {cpu_ns} {line}\nSPLIT {json.dumps(split, separators=(',', ':'))} {line}\n")
                if mesh_n is not None and line.startswith(mesh_line):
                    for done in _done:
                        done()
                    _done.clear()
                sys.stderr.flush()
        write(*lines)

    return print_line


def _threads() -> dict[str, float]:
    """CPU seconds of each thread (schedstat: ns), by thread name."""
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        out[f"thread:{name}"] = out.get(f"thread:{name}", 0.0) + ns / 1e9
    return out


def _count_calls() -> None:
    """Count dials, accepted handshakes and sent frames (by kind) until the mesh is complete."""
    from noex_lab.distribution import connection, liveness, membership, service, transport

    def counting(cls: Any, name: str, key: Callable[..., str]) -> None:
        original = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _done:
                counts[key(*args, **kwargs)] += 1
            return original(*args, **kwargs)

        setattr(cls, name, wrapper)

    def timing(cls: Any, name: str) -> None:
        """CPU microseconds spent in a synchronous method (nested calls count in both)."""
        original = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not _done:
                return original(*args, **kwargs)
            start = time.thread_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                counts[f"us_{cls.__name__}.{name}"] += (time.thread_time_ns() - start) // 1000

        setattr(cls, name, wrapper)

    for cls, name in ((membership.Membership, "on_connected"), (membership.Membership, "on_gossip"),
                      (transport.Transport, "_new_connection"), (connection.Connection, "send"),
                      (membership.Membership, "nodes"), (connection.Connection, "_received_frame"),
                      (membership.Membership, "_call"), (service.Services, "peer_joined"),
                      (liveness.LivenessMonitor, "watch"), (membership.Membership, "info")):
        timing(cls, name)
    counting(transport.Transport, "dial", lambda *a, **k: "dial")
    counting(transport.Transport, "_handle_incoming", lambda *a, **k: "accept")
    counting(transport.Transport, "ensure_dialing", lambda *a, **k: "ensure_dialing")
    counting(membership.Membership, "on_gossip", lambda self, entries: f"gossip_in_entries_{min(len(entries), 99):02d}")
    counting(connection.Connection, "send",
             lambda self, m, *a, **k: f"send_{m[0]}" + (f"_{m[1]}" if m and m[0] in (14, 16) else ""))

    def report() -> None:
        sys.stderr.write(f"COUNTS {json.dumps(dict(sorted(counts.items())), separators=(',', ':'))}\n")

    _done.append(report)


def _start_profiler(path: str) -> None:
    import cProfile

    profiler = cProfile.Profile(time.thread_time)  # CPU time: the load barely moves it

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    _done.insert(0, dump)
    profiler.enable()


def _install() -> None:
    """Wrap `_print` of the running `noex-lab` command (the console script's `noex_lab.cli`, or
    `__main__` under `python -m noex_lab.cli`)."""
    mesh_n = int(os.environ[MESH_N_ENV]) if os.environ.get(MESH_N_ENV) else None
    for name in ("noex_lab.cli", "__main__"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "_run_node"):
            module._print = _probe(module._print, mesh_n)
    if mesh_n is not None and os.environ.get(COUNTS_ENV):
        _count_calls()
    if mesh_n is not None and os.environ.get(PROFILE_ENV):
        _start_profiler(os.environ[PROFILE_ENV])


_install()

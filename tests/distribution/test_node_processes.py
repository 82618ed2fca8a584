"""Nodes as real OS processes (`noex-lab node`): mesh formation, SIGKILL, SIGSTOP, a blocked loop."""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import pytest

from noex_lab import Cluster, GenServer, NodeNotReachableError, RemoteSpawn
from tests.helpers.cluster import NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]

FAST = ["--heartbeat-interval-ms", "200", "--heartbeat-miss-threshold", "3"]
BEHAVIORS = ["--behaviors", "tests.distribution.behaviors_for_tests"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # these tests measure OS processes; one backend is enough



async def test_eight_node_processes_seeded_from_one_form_a_full_mesh_quickly(procs: list[NodeProcess]) -> None:
    t0 = time.time()
    seed = NodeProcess("seed", *FAST)
    procs.append(seed)
    seed_id = await seed.started()
    others = [NodeProcess(f"w{i}", *FAST, "--seed", str(seed_id)) for i in range(7)]
    procs.extend(others)

    def converged(p: NodeProcess) -> bool:
        return any(line.startswith("PEERS 7 ") for line in p.history)

    try:
        await wait_until(lambda: all(converged(p) for p in procs), 10.0, "every process sees 7 peers")
    except AssertionError:
        report = {p.id: [x for x in p.history if x.startswith(("PEERS", "DOWN"))][-3:] for p in procs}
        raise AssertionError(f"no full mesh: {report}") from None
    last = max(
        int(next(line for line in p.history if line.startswith("PEERS 7 ")).split()[2]) for p in procs
    )
    elapsed = last / 1e6 - t0
    assert elapsed < 5.0, f"full mesh of 8 processes took {elapsed:.2f} s"


async def _cluster_with_process(procs: list[NodeProcess], *extra: str) -> tuple[Any, NodeProcess]:
    me = await Cluster.start("tester", port=0, heartbeat_interval_ms=200, heartbeat_miss_threshold=3)
    victim = NodeProcess("victim", *FAST, *BEHAVIORS, "--seed", str(me.id), *extra)
    procs.append(victim)
    victim_id = await victim.started()
    await wait_until(lambda: any(i.id == victim_id for i in me.get_nodes()), 5.0, "victim joined")
    return me, victim


async def test_sigkill_is_seen_at_once_and_pending_calls_fail(procs: list[NodeProcess]) -> None:
    me, victim = await _cluster_with_process(procs)
    downs: list[tuple[Any, str, float]] = []
    me.on_node_down(lambda peer, reason: downs.append((peer, reason, time.monotonic())))
    ref = await RemoteSpawn.spawn("echo", victim.id)
    errors: list[BaseException] = []

    async def pending() -> None:
        try:
            await GenServer.call(ref, ("slow", 30.0), timeout=20.0)
        except BaseException as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(pending)
        assert await GenServer.call(ref, "ping") == "ping"
        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
    await wait_until(lambda: downs, 2.0, "down reported")
    peer, reason, seen_at = downs[0]
    assert peer == victim.id and reason == "connection_closed"
    assert seen_at - killed_at < 0.5
    assert len(errors) == 10 and all(isinstance(e, NodeNotReachableError) for e in errors), errors


async def test_sigstop_is_detected_by_heartbeat_timeout(procs: list[NodeProcess]) -> None:
    me, victim = await _cluster_with_process(procs)
    downs: list[tuple[Any, str, float]] = []
    me.on_node_down(lambda peer, reason: downs.append((peer, reason, time.monotonic())))
    stopped_at = time.monotonic()
    victim.signal(signal.SIGSTOP)
    try:
        await wait_until(lambda: downs, 3.0, "down after SIGSTOP")
    finally:
        victim.signal(signal.SIGCONT)
    _, reason, seen_at = downs[0]
    assert reason == "heartbeat_timeout"
    assert 0.4 <= seen_at - stopped_at <= 1.2, f"detected after {seen_at - stopped_at:.3f} s"


async def test_blocked_loop_is_busy_never_down_and_recovers(procs: list[NodeProcess]) -> None:
    me, victim = await _cluster_with_process(procs)
    downs: list[Any] = []
    busy: list[float] = []
    me.on_node_down(lambda peer, reason: downs.append((peer, reason)))
    me.on_node_busy(lambda info: busy.append(time.monotonic()))
    ref = await RemoteSpawn.spawn("echo", victim.id)
    blocked_at = time.monotonic()
    GenServer.cast(ref, ("block", 4.0))
    await wait_until(lambda: busy, 2.0, "busy reported")
    assert busy[0] - blocked_at < 1.0
    info = next(i for i in me.get_nodes() if i.id == victim.id)
    assert info.status == "busy" and info.loop_lag_ms > 0
    await wait_until(
        lambda: any(i.id == victim.id and i.status == "up" for i in me.get_nodes()), 8.0, "back to up"
    )
    assert time.monotonic() - blocked_at >= 3.5
    assert downs == []
    assert await GenServer.call(ref, "get") == 0


async def test_sigterm_leaves_gracefully(procs: list[NodeProcess]) -> None:
    me, victim = await _cluster_with_process(procs)
    downs: list[tuple[Any, str]] = []
    me.on_node_down(lambda peer, reason: downs.append((peer, reason)))
    victim.signal(signal.SIGTERM)
    await wait_until(lambda: downs, 3.0, "down after SIGTERM")
    assert downs == [(victim.id, "graceful_shutdown")]
    assert await anyio.to_thread.run_sync(victim.proc.wait, 5) == 0


async def test_node_command_rejects_bad_input() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "noex_lab.cli", "node", "--name", "bad name", "--port", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "invalid node name" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "noex_lab.cli", "node", "--name", "x", "--host", "0.0.0.0", "--port", "0",
         "--no-secret"],  # without it the per-user secret is used
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "cluster_secret" in result.stderr

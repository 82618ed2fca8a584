"""Local node processes and the kernel's life: they survive the stop button (interrupt), and
exit with the kernel whether it is restarted, shut down or SIGKILLed (no orphans)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.helpers.waiting import pid_alive, wait_pids_gone
from tests.lab.conftest import local_pids, shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(120)

EXIT_DEADLINE_S = 15.0


def _start_cluster(k: Kernel, n: int = 2) -> list[int]:
    k.ok("%load_ext noex_lab")
    k.ok("%noex start kern")
    k.ok(f"%noex local {n}", timeout=60)
    pids = local_pids(k)
    assert len(pids) == n and all(pid_alive(p) for p in pids)
    return pids


def test_interrupt_leaves_local_nodes_running() -> None:
    k = Kernel()
    pids: list[int] = []
    try:
        pids = _start_cluster(k)
        msg_id = k.kc.execute("import time\nprint('cell running', flush=True)\nfor _ in range(600):\n"
                              "    time.sleep(0.1)")
        # Wait for the cell's own output, not just the "busy" status: ipykernel publishes "busy"
        # before it installs the handler that turns SIGINT into a KeyboardInterrupt in the cell,
        # and an interrupt in between is swallowed ("KeyboardInterrupt caught in kernel").
        k.pump_until(lambda: any(m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
                                 and "cell running" in m["content"]["text"] for m in k.messages),
                     10, "the blocking cell to run")
        k.km.interrupt_kernel()  # the stop button: SIGINT to the kernel's process group
        k.pump_until(lambda: any(m["msg_type"] == "error" and m["parent_header"].get("msg_id") == msg_id
                                 for m in k.messages), 10, "the KeyboardInterrupt")
        error = next(m for m in k.messages if m["msg_type"] == "error" and m["parent_header"].get("msg_id") == msg_id)
        assert error["content"]["ename"] == "KeyboardInterrupt"
        k.pump_until(lambda: any(m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
                                 and m["content"]["execution_state"] == "idle" for m in k.messages),
                     10, "the kernel to be idle again")
        assert all(pid_alive(p) for p in pids), "the stop button must not reach the local nodes"
        nodes = k.ok("%noex nodes").text
        assert nodes.count("local pid") == 2 and "down" not in nodes
        k.ok("from noex_lab import GenServer, RemoteSpawn\n"
             "import noex_lab\n"
             "assert len(noex_lab.current_node().get_nodes()) == 2")
    finally:
        shutdown_and_reap(k, pids)


def test_restart_ends_local_nodes() -> None:
    k = Kernel()
    pids: list[int] = []
    try:
        pids = _start_cluster(k)
        k.km.restart_kernel(now=False)  # a graceful shutdown request, then a new kernel process
        assert not wait_pids_gone(pids, EXIT_DEADLINE_S), "local nodes outlived the restarted kernel"
        k.kc.wait_for_ready(timeout=60)
        r = k.execute("%noex nodes", allow_error=True)
        assert r.ename == "UsageError"  # a fresh kernel: the extension is not loaded any more
    finally:
        shutdown_and_reap(k, pids)


def test_sigkill_of_the_kernel_ends_local_nodes() -> None:
    k = Kernel()
    pids: list[int] = []
    try:
        pids = _start_cluster(k, 3)
        kernel_pid = k.pid
        started = time.monotonic()
        os.kill(kernel_pid, signal.SIGKILL)
        alive = wait_pids_gone(pids, EXIT_DEADLINE_S)
        assert not alive, f"orphaned local nodes after SIGKILL of the kernel: {alive}"
        assert time.monotonic() - started < EXIT_DEADLINE_S
    finally:
        shutdown_and_reap(k, pids)


def test_shutdown_ends_local_nodes(kernel: Kernel) -> None:
    pids = _start_cluster_loaded(kernel)
    kernel.shutdown()
    assert not wait_pids_gone(pids, EXIT_DEADLINE_S)


def _start_cluster_loaded(k: Kernel) -> list[int]:
    k.ok("%noex start kern")
    k.ok("%noex local 2", timeout=60)
    pids = local_pids(k)
    assert len(pids) == 2
    return pids


def test_unload_closes_local_nodes_and_restores_streams_reload_adopts_the_node(kernel: Kernel) -> None:
    pids = _start_cluster_loaded(kernel)
    assert kernel.eval("type(__import__('sys').stdout).__name__") == "ProcessOutput"
    kernel.ok("%unload_ext noex_lab")
    assert not wait_pids_gone(pids, EXIT_DEADLINE_S), "unloading the extension ends its local nodes"
    assert kernel.eval("type(__import__('sys').stdout).__name__") == "OutStream"
    assert kernel.execute("%noex nodes", allow_error=True).ename == "UsageError"
    kernel.ok("%load_ext noex_lab")
    assert "reusing node kern@127.0.0.1:" in kernel.ok("%noex start kern").text
    assert "down (graceful_shutdown)" in kernel.ok("%noex nodes").text

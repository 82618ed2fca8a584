"""Fixtures for the Jupyter-layer tests: real ipykernels, cleaned up with their node processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.helpers.waiting import wait_pids_gone
from tests.lab.kernel_harness import Kernel

PIDS_OF_LOCAL_NODES = (
    "[n.pid for n in __import__('noex_lab.lab', fromlist=['x']).session_of(get_ipython()).launcher.nodes.values()]"
)


def local_pids(kernel: Kernel) -> list[int]:
    """PIDs of every node process `%noex local` started in `kernel` (running or not)."""
    if not kernel.km.is_alive():
        return []
    try:
        pids = kernel.eval(PIDS_OF_LOCAL_NODES, timeout=10)
    except Exception:
        return []
    return [int(p) for p in pids]


def shutdown_and_reap(kernel: Kernel, extra_pids: list[int] | None = None) -> None:
    """Shut the kernel down; make sure no node process it started outlives it."""
    pids = local_pids(kernel) + list(extra_pids or [])
    kernel.shutdown()
    alive = wait_pids_gone(pids, 15.0)
    for pid in alive:  # a leak is a failure of the test that checks it; here only clean up
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A fresh kernel with the extension loaded."""
    k = Kernel()
    try:
        k.ok("%load_ext noex_lab")
        yield k
    finally:
        shutdown_and_reap(k)

"""What a `noex-lab node` costs to start and to mesh (issue 19, W10: 32 of them share 2 cores, so
every process's CPU adds up): it prints `NODE` within a CPU budget, meshes with each peer within
another, and neither it nor `import noex_lab` loads the lab / terminal / Jupyter side."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys

import pytest

from tests.helpers.cluster import NodeProcess
from tests.helpers.processes import REPO, repo_env
from tests.helpers.waiting import wait_until

# Measured on the 2-core test machine: 130-160 ms of CPU from exec to `NODE` (interpreter and
# site ~20 ms, asyncio + anyio ~40 ms, noex_lab's modules ~70 ms, argument parsing and
# Cluster.start ~20 ms). The bound leaves room for a loaded machine, not for a doubling: the
# lab side (`noex_lab.lab`, with IPython) creeping into a node's imports makes it ~0.38 s.
NODE_START_CPU_S = 0.3
# A node's CPU from its `NODE` line to `PEERS 7` in an 8-node formation, per peer (each: one
# handshake, its member list, the services' join work, the PEERS line). Measured on the 2-core test
# machine with benchmarks/mesh_cost.py (medians over the nodes; load average 8 to 15): 8 nodes
# 2.3-2.6 ms before issue 19's mesh work, 1.8-2.3 ms after; 32 nodes 2.9-3.4 ms before (every node
# announced every new connection to all its peers: O(n^2) frames per node), 1.5-2.0 ms after.
# The bound leaves room for a loaded machine, not for a doubling.
MESH_CPU_PER_PEER_S = 0.005
MESH_NODES = 8
HEAVY = ("IPython", "ipywidgets", "ipykernel", "rich", "noex_lab.lab", "noex_lab.terminal", "noex_lab.widgets",
         "noex_lab.metrics", "noex_lab.otel")


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/PID/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has loaded after running `code`."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=repo_env(), capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.split()


def test_import_noex_lab_loads_no_lab_terminal_or_jupyter_module() -> None:
    assert _loaded_after("import noex_lab") == []


def test_the_node_command_line_loads_no_lab_terminal_or_jupyter_module() -> None:
    code = ("from noex_lab import cli\n"
            "cli._parser('node').parse_args(['node', '--name', 'a', '--no-secret'])\n"
            "import noex_lab.distribution.cluster, noex_lab.frontend.options, noex_lab.logs")
    assert _loaded_after(code) == []


def test_the_top_and_demo_commands_still_parse_their_options() -> None:
    code = ("from noex_lab import cli\n"
            "assert cli._parser('top').parse_args(['top', 'a@127.0.0.1:1', '--once']).once\n"
            "assert cli._parser('demo').parse_args(['demo', '--duration', '5']).duration == 5.0")
    assert _loaded_after(code) == ["noex_lab.terminal"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # an OS process is measured; one backend is enough


@pytest.mark.anyio
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.skipif(bool(os.environ.get("COVERAGE_PROCESS_START")), reason="coverage traces the child: CPU meaningless")
async def test_a_node_prints_node_within_its_cpu_budget() -> None:
    # bytecode, as an installed package has it (benchmarks/nodes.py does the same for W6/W10):
    # compiling noex_lab from source would add ~0.13 s of CPU that no installed node pays
    compileall.compile_dir(str(REPO / "noex_lab"), quiet=1)
    node = NodeProcess("cpu", "--no-secret", "--loop", "asyncio")
    try:
        await node.started(timeout=20.0)
        cpu_s = _cpu_s(node.pid)  # the node is idle from here on: this is what its start cost
    finally:
        node.stop()
    assert cpu_s <= NODE_START_CPU_S, f"node start used {cpu_s:.3f} s of CPU (budget {NODE_START_CPU_S} s)"


def _probe_cpu_s(node: NodeProcess, prefix: str) -> float | None:
    """The node's own CPU (every thread) when it printed its first line starting with `prefix`,
    as `benchmarks.mesh_probe` reports it on stderr (`CPU <ns> <line>`)."""
    for line in list(node.stderr):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "CPU" and parts[2].startswith(prefix):
            return int(parts[1]) / 1e9
    return None


@pytest.mark.anyio
async def test_a_node_meshes_with_each_peer_within_its_cpu_budget() -> None:
    compileall.compile_dir(str(REPO / "noex_lab"), quiet=1)  # (as above)
    n = MESH_NODES
    flags = ("--no-secret", "--loop", "asyncio", "--behaviors", "benchmarks.mesh_probe")
    env = {"NOEX_BENCH_MESH_N": str(n)}  # the probe reports the CPU at NODE and at PEERS n-1
    nodes = [NodeProcess("mesh0", *flags, env=env)]
    try:
        seed = await nodes[0].started(timeout=20.0)
        nodes += [NodeProcess(f"mesh{i}", *flags, "--seed", str(seed), env=env) for i in range(1, n)]  # at once, as W6
        for node in nodes:
            await node.wait_peers(n - 1, timeout=40.0)
        mesh = f"PEERS {n - 1} "
        # (each CPU line goes to stderr just before its line to stdout)
        await wait_until(lambda: all(_probe_cpu_s(node, mesh) is not None for node in nodes), 10.0, "the CPU lines")
        per_peer = []
        for node in nodes:
            at_node, at_mesh = _probe_cpu_s(node, "NODE "), _probe_cpu_s(node, mesh)
            assert at_node is not None and at_mesh is not None
            per_peer.append((at_mesh - at_node) / (n - 1))
    finally:
        for node in nodes:
            node.stop()
    median = sorted(per_peer)[n // 2]
    assert median <= MESH_CPU_PER_PEER_S, (
        f"a node used {median * 1000:.2f} ms of CPU per peer while {n} nodes meshed (median; budget "
        f"{MESH_CPU_PER_PEER_S * 1000:.1f} ms; every node: {[round(x * 1000, 2) for x in per_peer]})")

"""What a `noex-lab node` costs to start (issue 19, W10: 32 of them share 2 cores, so every
process's start CPU adds up): it prints `NODE` within a CPU budget, and neither it nor `import
noex_lab` loads the lab / terminal / Jupyter side."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys

import pytest

from tests.helpers.cluster import NodeProcess
from tests.helpers.processes import REPO, repo_env

# Measured on the 2-core test machine: 130-160 ms of CPU from exec to `NODE` (interpreter and
# site ~20 ms, asyncio + anyio ~40 ms, noex_lab's modules ~70 ms, argument parsing and
# Cluster.start ~20 ms). The bound leaves room for a loaded machine, not for a doubling: the
# lab side (`noex_lab.lab`, with IPython) creeping into a node's imports makes it ~0.38 s.
NODE_START_CPU_S = 0.3
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

"""The notebook's node launcher (`ProcessLauncher`) over the front ends' one child-process
launcher: the secret arrives as the first stdin line, the child protocol's `NODE` line makes the
node ready, every other line reaches the output callback on the kernel's loop, closing stdin
stops it and its exit is reported once; a child that dies first raises the transport's typed
error with its stderr. A `Transport` whose command is a small Python script (real OS processes)."""

from __future__ import annotations

import sys
import threading

import pytest

from noex_lab import NodeId
from noex_lab.lab.launchers import LocalNodeError, LocalTransport
from noex_lab.lab.local_nodes import LaunchedNode, ProcessLauncher
from noex_lab.testing import wait_until

pytestmark = pytest.mark.anyio

SEED = NodeId.parse("kern@127.0.0.1:1")
NODE_LIKE = r"""
import sys
secret = sys.stdin.readline().strip()
print("hello", flush=True)
sys.stderr.buffer.write(b"warn \xff\n"); sys.stderr.flush()
print("NODE fake@127.0.0.1:5555", flush=True)
print("after " + str(len(secret)), flush=True)
sys.stdin.read()  # until the launcher closes stdin, as --exit-on-stdin-eof
sys.exit(7)
"""
DIES = "import sys; sys.stdin.readline(); sys.stderr.write('no such option --bogus\\n'); sys.exit(2)"


class ScriptTransport(LocalTransport):
    """Runs a Python script instead of `noex-lab node` (the launcher interface other launchers use)."""

    def __init__(self, script: str) -> None:
        self.script = script

    def command(self, node_args: list[str]) -> list[str]:
        return [sys.executable, "-c", self.script, *node_args]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lab layer runs on the kernel's asyncio loop


@pytest.mark.timeout(30)
async def test_ready_on_the_node_line_output_on_the_loop_stop_by_closing_stdin() -> None:
    loop_thread = threading.get_ident()
    output: list[tuple[str, str, bool]] = []
    exits: list[tuple[LaunchedNode, int]] = []
    launcher = ProcessLauncher(
        lambda node, stream, line: output.append((stream, line, threading.get_ident() == loop_thread)),
        lambda node, code: exits.append((node, code)),
    )
    node = await launcher.launch("fake", SEED, "s3cret", transport=ScriptTransport(NODE_LIKE), timeout=10)
    try:
        assert node.node_id == NodeId.parse("fake@127.0.0.1:5555") and node.alive
        assert launcher.find("fake") is node and launcher.by_id(node.node_id) is node
        await wait_until(lambda: ("stdout", "after 6", True) in output, 10, "the line after NODE")
        assert ("stdout", "hello", True) in output and ("stdout", "after 6", True) in output  # secret read
        assert ("stderr", "warn \ufffd", True) in output
        assert not any("NODE" in line for _, line, _ in output)  # the protocol line is the launcher's
        assert await launcher.stop(node, timeout=10) == 7
        assert exits == [(node, 7)] and not node.alive
    finally:
        if node.alive:
            await launcher.kill(node)


@pytest.mark.timeout(30)
async def test_a_child_that_dies_before_listening_raises_the_transports_error() -> None:
    exits: list[int] = []
    launcher = ProcessLauncher(lambda node, stream, line: None, lambda node, code: exits.append(code))
    with pytest.raises(LocalNodeError, match=r"exited with code 2 before it was ready: no such option --bogus"):
        await launcher.launch("dies", SEED, "s3cret", transport=ScriptTransport(DIES), timeout=10)
    assert exits == [2] and launcher.alive() == []

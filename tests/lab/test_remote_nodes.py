"""`%noex remote` against a real OpenSSH server on 127.0.0.1 (tests/helpers/sshd.py).

Run by `make test-ssh` (part of `make test`, which installs openssh-server when missing): they are
marked `ssh`, which the default selection leaves out. The remote nodes are children of sshd, not
of the kernel: every check of their life is a /proc scan for their names.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from noex_lab import Cluster
from noex_lab.lab.launchers import RemoteNodeError, SshTransport
from noex_lab.lab.local_nodes import ProcessLauncher
from tests.helpers.sshd import Sshd, node_pids, start_sshd
from tests.helpers.waiting import pid_alive, wait_pids_gone, wait_until
from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(120)]

EXIT_DEADLINE_S = 15.0
SECRET = "remote-test-secret-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lab layer runs on the kernel's asyncio loop


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def _prefix(tag: str) -> str:
    return f"rt{tag}{os.getpid()}n"  # unique on this machine: the /proc scans look for it


def _reap(prefix: str) -> None:
    for pid in node_pids(prefix):  # a leak fails the test that checks it; here only clean up
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _holds(pid: int, secret: str) -> bool:
    """Whether the secret is on `pid`'s command line or in its environment."""
    data = b""
    for part in ("cmdline", "environ"):
        try:
            data += Path(f"/proc/{pid}/{part}").read_bytes()
        except OSError:
            pass
    return secret.encode() in data


BEHAVIOR_CELL = """%%noex behavior rt_where
from noex_lab import GenServer, current_node

class Where(GenServer):
    def init(self, arg):
        return arg

    def handle_call(self, msg, state):
        return str(current_node().id.name), state
"""

SUPERVISE_CELL = """from noex_lab import DistributedSupervisor, GenServer
sup = await DistributedSupervisor.start(
    children=[{"id": f"c{i}", "behavior_name": "rt_where", "arg": i} for i in range(6)],
    node_selector="round_robin", max_restarts=20)

async def placement():
    return sorted((ch.id, ch.node.name) for ch in await DistributedSupervisor.which_children(sup))

placed = await placement()
print("placed", placed)
"""


def test_remote_nodes_take_behaviors_fail_over_and_die_with_the_kernel(sshd: Sshd) -> None:
    prefix = _prefix("a")
    k = Kernel()
    try:
        k.ok("%load_ext noex_lab")
        k.ok("%noex start kern")
        r = k.ok(f"%noex remote 127.0.0.1 2 --prefix {prefix} {sshd.magic_options()}", timeout=60)
        assert f"started 2 remote node(s) on ssh 127.0.0.1: {prefix}1, {prefix}2" in r.text
        assert "node processes on 127.0.0.1 (ssh)" in r.text
        remote_pids = node_pids(prefix)
        assert len(remote_pids) == 2
        ssh_pids = k.eval("[n.proc.pid for n in __import__('noex_lab.lab', fromlist=['x'])"
                          ".session_of(get_ipython()).launcher.nodes.values()]")
        secret = k.eval("__import__('noex_lab.lab', fromlist=['x']).session_of(get_ipython()).secret")
        # the secret went over the SSH channel: on no command line, in no environment
        assert not any(_holds(pid, secret) for pid in [*remote_pids, *ssh_pids])

        nodes = k.ok("%noex nodes").text
        assert nodes.count("ssh 127.0.0.1 pid") == 2
        assert all(f"ssh 127.0.0.1 pid {pid}" in nodes for pid in remote_pids)
        assert "local pid" not in nodes
        assert "shipped to 2 of 2 other node(s)" in k.ok(BEHAVIOR_CELL).text

        placed = k.ok(SUPERVISE_CELL).text
        assert f"'{prefix}1')" in placed and f"'{prefix}2')" in placed  # round robin: the kernel and both
        r = k.ok(f"%noex kill {prefix}1")
        assert re.search(rf"killed remote node {prefix}1 \({prefix}1@127\.0\.0\.1:\d+, ssh 127\.0\.0\.1 pid \d+, "
                         r"exit code \d+\)", r.text)
        assert not wait_pids_gone([pid for pid in remote_pids if pid in node_pids(f"{prefix}1")], 5.0)
        moved = k.ok(
            "for _ in range(200):  # bounded: 10 s\n"
            "    now = await placement()\n"
            f"    if all(node != '{prefix}1' for _, node in now):\n"
            "        break\n"
            "    await __import__('asyncio').sleep(0.05)\n"
            "answers = {ch.id: await GenServer.call(ch.ref, 'where')\n"
            "           for ch in await DistributedSupervisor.which_children(sup)}\n"
            "print('moved', sorted(answers.items()), now)", timeout=30).text
        assert f"'{prefix}1'" not in moved and f"'{prefix}2'" in moved
        assert moved.count("'c") == 12  # every child answers, from where it runs now

        second = node_pids(f"{prefix}2")
        r = k.ok(f"%noex stop {prefix}2")
        assert re.search(rf"stopped remote node {prefix}2 \({prefix}2@127\.0\.0\.1:\d+, exit code 0\)", r.text)
        assert not wait_pids_gone(second, 5.0)
        r = k.ok(f"%noex remote 127.0.0.1 1 --prefix {prefix} {sshd.magic_options()}", timeout=60)
        assert f"started 1 remote node(s) on ssh 127.0.0.1: {prefix}1" in r.text  # the free name again
        assert "1 remote node(s) on ssh 127.0.0.1 already running" in k.ok(
            f"%noex remote 127.0.0.1 1 --prefix {prefix} {sshd.magic_options()}").text
        ssh_pids = k.eval("[n.proc.pid for n in __import__('noex_lab.lab', fromlist=['x'])"
                          ".session_of(get_ipython()).launcher.nodes.values()]")

        survivors = node_pids(prefix)
        assert len(survivors) == 1
        os.kill(k.pid, signal.SIGKILL)
        alive = wait_pids_gone([*survivors, *ssh_pids], EXIT_DEADLINE_S)
        assert not alive, f"processes outlived the killed kernel: {alive}"
        assert node_pids(prefix) == []
    finally:
        shutdown_and_reap(k)
        _reap(prefix)


def test_a_failed_remote_start_says_why_in_the_cell(sshd: Sshd, kernel: Kernel) -> None:
    prefix = _prefix("b")
    try:
        kernel.ok("%noex start kern")
        r = kernel.execute(f"%noex remote 127.0.0.1 1 --prefix {prefix} {sshd.magic_options(sshd.wrong_key)}",
                           allow_error=True, timeout=60)
        assert r.ename == "RemoteNodeError"
        assert f"remote node {prefix}1 on 127.0.0.1 did not start: SSH refused the login" in r.error["evalue"]  # type: ignore[index]
        assert "Remote stderr: " in r.error["evalue"] and "Permission denied" in r.error["evalue"]  # type: ignore[index]

        r = kernel.execute(f"%noex remote 127.0.0.1 1 --prefix {prefix} --python /nonexistent/python3 "
                           f"{sshd.magic_options()}", allow_error=True, timeout=60)
        assert r.ename == "RemoteNodeError"
        assert ("did not start: there is no Python at /nonexistent/python3 on 127.0.0.1: pass --python"
                in r.error["evalue"])  # type: ignore[index]
        assert "/nonexistent/python3: not found" in r.error["evalue"]  # type: ignore[index]

        r = kernel.execute("%noex remote gpu.example.invalid 1", allow_error=True)
        assert r.ename == "RemoteNodeError" and "listens on a loopback address" in r.error["evalue"]  # type: ignore[index]
        assert node_pids(prefix) == []
        assert "remote node" not in kernel.ok("%noex nodes").text
    finally:
        _reap(prefix)


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_the_remote_node_leaves_when_the_ssh_connection_drops(sshd: Sshd) -> None:
    prefix = _prefix("c")
    me = await Cluster.start("kern", port=0, cluster_secret=SECRET)
    launcher = ProcessLauncher(lambda node, stream, line: None, lambda node, code: None)
    transport = SshTransport("127.0.0.1", user=sshd.user, options=tuple(sshd.ssh_options))
    try:
        node = await launcher.launch(f"{prefix}1", me.id, SECRET, transport=transport)  # type: ignore[arg-type]
        assert node.remote_pid in node_pids(prefix) and node.remote_pid != node.proc.pid
        await wait_until(lambda: [i.id for i in me.get_nodes()] == [node.node_id], 10.0, "the remote node joined")
        assert not _holds(node.remote_pid, SECRET) and not _holds(node.proc.pid, SECRET)  # type: ignore[arg-type]
        os.kill(node.proc.pid, signal.SIGKILL)  # the connection drops: sshd closes the node's stdin
        alive = await asyncio.to_thread(wait_pids_gone, [node.remote_pid], EXIT_DEADLINE_S)
        assert not alive, "the remote node outlived its SSH connection"
        await wait_until(lambda: not me.get_nodes(), 10.0, "the remote node left")
        assert not pid_alive(node.proc.pid) and node_pids(prefix) == []
        with pytest.raises(RemoteNodeError, match=r"did not start: ssh could not connect to 127\.0\.0\.1"):
            await launcher.launch(f"{prefix}2", me.id, SECRET, timeout=20,  # type: ignore[arg-type]
                                  transport=SshTransport("127.0.0.1", user=sshd.user,
                                                         options=(f"Port={_closed_port()}", *sshd.ssh_options)))
    finally:
        launcher.close_all()
        await me.stop()
        _reap(prefix)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again once this returns: connections are refused

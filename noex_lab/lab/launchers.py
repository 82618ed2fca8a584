"""How a notebook runs node processes here or on other machines: one launcher, several transports.

`ProcessLauncher` (in `local_nodes.py`) starts every `noex-lab node` process the same way: it
runs the command a `Transport` gives it, writes the cluster secret as the first line of the
process's standard input (`--secret-stdin`: never on a command line, never in a file), then
holds that stdin open (`--exit-on-stdin-eof`), reads the output and waits for `NODE <id>`.
A transport only says how to run that command from this machine:

- `LocalTransport`: the kernel's own interpreter, on this machine (`%noex local`);
- `SshTransport`: the system's OpenSSH client, which runs it on another machine (`%noex remote`).
  Its standard input is the SSH channel's, so the secret travels encrypted inside the channel,
  and when the channel ends (the kernel exits or is killed, the connection drops) the remote
  node's stdin reaches EOF and the node leaves: no orphans on the remote machine.

`Transport` is the launcher interface: another launcher (SLURM's `srun`, `kubectl run -i`) is a
transport whose command forwards its standard input to the node process
(docs/guides/remote-nodes.md has recipes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.node_id import NodeId
from ..distribution.cluster import HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD, is_loopback
from .errors import LabError

if TYPE_CHECKING:
    from .local_nodes import LaunchedNode

PID_LINE = "NOEX_PID "  # printed by a transport's command before the node starts: the node's pid there


class LaunchError(LabError):
    """A node process could not be started, killed or stopped, or is not known."""


class LocalNodeError(LaunchError):
    """A local node process could not be started, or is not known."""


class RemoteNodeError(LaunchError):
    """A node process on another machine could not be started or killed (the message carries the
    remote stderr tail and what to check)."""


@dataclass(frozen=True)
class NodeSpec:
    """What every launched node is told: its name, the seed it joins (the kernel's node), the
    cluster's heartbeat settings, and whom it accepts behavior source from."""

    name: str
    seed: NodeId
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    heartbeat_miss_threshold: int = HEARTBEAT_MISS_THRESHOLD
    code_from_any: bool = False

    def node_args(self, host: str, advertise_host: str | None = None) -> list[str]:
        """The `noex-lab node` arguments (the secret is read from stdin, never passed here)."""
        args = ["--name", self.name, "--port", "0", "--host", host]
        if advertise_host:
            args += ["--advertise-host", advertise_host]
        args += ["--seed", str(self.seed), "--secret-stdin", "--exit-on-stdin-eof", "--allow-code",
                 "--allow-fault-injection",  # %noex partition / link (authenticated peers only)
                 "--heartbeat-interval-ms", str(self.heartbeat_interval_ms),
                 "--heartbeat-miss-threshold", str(self.heartbeat_miss_threshold)]
        if not self.code_from_any:
            args += ["--allow-code-from", str(self.seed)]
        return args


class Transport(ABC):
    """How to run one node process from this machine (the interface another launcher implements).

    `command()` is run here with pipes for stdin, stdout and stderr; whatever it starts must
    forward that stdin to the node process (the secret line, then EOF when the kernel lets go)
    and its stdout and stderr back. It may print `NOEX_PID <pid>` before the node starts: the
    node's pid where it runs, for `kill()` and the views."""

    kind = "local"  # how %noex words it: "local node local1", "remote node gpu1"
    label = "local"  # where, in %noex nodes and the views: "local", "ssh gpu1"
    bind_host = "127.0.0.1"  # the address the node listens on
    advertise_host: str | None = None  # the address its peers dial, when bind_host is a wildcard
    error: type[LaunchError] = LaunchError

    @abstractmethod
    def command(self, node_args: list[str]) -> list[str]:
        """The argv that runs `noex-lab node *node_args` (from this machine)."""

    def environment(self) -> dict[str, str]:
        """The environment of the command run here."""
        return dict(os.environ)

    def check_seed(self, seed: NodeId) -> None:
        """Raise `error` when a node started through this transport could not reach `seed`
        (a loopback seed is reachable from this machine)."""
        return None

    async def kill(self, node: LaunchedNode) -> None:
        """SIGKILL the node process (a crash: its peers see the connection drop)."""
        with contextlib.suppress(ProcessLookupError):
            if node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGKILL)

    def failure(self, name: str, code: int, stderr_tail: list[str]) -> str:
        """Why the node exited (with code `code`) before it listened, for the cell's error."""
        tail = " | ".join(stderr_tail[-5:]) or "(no output)"
        return f"{self.kind} node {name} exited with code {code} before it was ready: {tail}"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class LocalTransport(Transport):
    """The kernel's own interpreter, on this machine (`%noex local`)."""

    error = LocalNodeError

    def command(self, node_args: list[str]) -> list[str]:
        return [sys.executable, "-m", "noex_lab.cli", "node", *node_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        return env


# always given to ssh (after the user's own -o options, which win: ssh keeps the first value)
SSH_DEFAULTS = (
    "BatchMode=yes",  # never prompt: a kernel cannot answer a password or host-key question
    "ServerAliveInterval=5", "ServerAliveCountMax=3",  # the client notices a dead server in ~15 s
    "ClearAllForwardings=yes",  # several connections to one host: no clashing forwarded ports
)
SSH_CONNECT_TIMEOUT_S = 10
SSH_KILL_TIMEOUT_S = 15.0


@dataclass
class SshTransport(Transport):
    """The system's OpenSSH client runs the node on `host` (`%noex remote`).

    The remote login shell runs `/bin/sh -c 'echo NOEX_PID $$; exec PYTHON -u -m noex_lab.cli node
    ...'` (in `workdir` when given): `python` must have noex_lab installed there. `options` are
    `ssh -o` values (`Port=2222`, `IdentityFile=...`), `config` an `ssh -F` file."""

    host: str
    user: str | None = None
    python: str = sys.executable
    workdir: str | None = None
    advertise: str | None = None
    options: tuple[str, ...] = ()
    config: str | None = None
    ssh: str = "ssh"

    kind = "remote"
    error = RemoteNodeError

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise RemoteNodeError(f"bad host {self.host!r}: a host name, an address or an ssh config alias")
        if "@" in self.host:
            user, _, self.host = self.host.rpartition("@")
            self.user = self.user or user
        self.label = f"ssh {self.host}"
        # a loopback host is reached at 127.0.0.1; any other listens on every address and
        # advertises the name the kernel reached it by (or --advertise-host)
        if self.advertise:
            self.bind_host, self.advertise_host = "0.0.0.0", self.advertise
        elif is_loopback(self.host):
            self.bind_host, self.advertise_host = "127.0.0.1", None
        else:
            self.bind_host, self.advertise_host = "0.0.0.0", self.host

    def ssh_argv(self, remote_command: str) -> list[str]:
        argv = [self.ssh, "-T"]
        if self.config:
            argv += ["-F", self.config]
        for option in (*self.options, *SSH_DEFAULTS, f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"):
            argv += ["-o", option]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, "--", self.host, remote_command]

    def command(self, node_args: list[str]) -> list[str]:
        script = f"echo {PID_LINE}$$ && exec {shlex.quote(self.python)} -u -m noex_lab.cli node {shlex.join(node_args)}"
        if self.workdir:
            script = f"cd {shlex.quote(self.workdir)} && {script}"
        return self.ssh_argv(f"exec /bin/sh -c {shlex.quote(script)}")

    def check_seed(self, seed: NodeId) -> None:
        if is_loopback(seed.host) and not is_loopback(self.host):
            raise RemoteNodeError(
                f"this kernel's node {seed} listens on a loopback address, which {self.host} cannot reach: "
                "run %noex stop, then %noex start NAME --host 0.0.0.0 --advertise-host ADDRESS "
                f"(an address of this machine that {self.host} can reach)")

    async def kill(self, node: LaunchedNode) -> None:
        """SIGKILL the remote process over a second SSH connection (its pid came in its first
        line). Should that fail, the SSH client is killed instead: the node then leaves
        gracefully, as its stdin ends, and the error says so."""
        if node.remote_pid is None or node.proc.poll() is not None:
            await super().kill(node)
            return
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_argv(f"kill -KILL {int(node.remote_pid)}"), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), SSH_KILL_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            err = b"(no answer within %d s)" % SSH_KILL_TIMEOUT_S
        if proc.returncode != 0 and node.proc.poll() is None:
            await super().kill(node)
            text = err.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
            raise RemoteNodeError(
                f"could not SIGKILL remote node {node.name} (pid {node.remote_pid} on {self.host}): {text}; "
                "its SSH connection was closed instead, so it leaves gracefully")

    def failure(self, name: str, code: int, stderr_tail: list[str]) -> str:
        text = "\n".join(stderr_tail)
        if code == 255 and "Permission denied" in text:
            why = (f"SSH refused the login to {self.host}: check the user (--user), that your key is authorized "
                   "there (--ssh-option IdentityFile=PATH) and that `ssh HOST` works without a prompt")
        elif code == 255 and "Host key verification failed" in text:
            why = (f"the host key of {self.host} is not known here: ssh to it once from a terminal, or pass "
                   "--ssh-option StrictHostKeyChecking=accept-new")
        elif code == 255:
            why = (f"ssh could not connect to {self.host} (exit code 255): check the name, the port "
                   "(--ssh-option Port=N) and the firewall")
        elif code in (126, 127) and "noex_lab" not in text:
            why = (f"there is no Python at {self.python} on {self.host}: pass --python with the path of a "
                   "Python that has noex_lab installed there")
        elif "No module named noex_lab" in text:
            why = f"{self.python} on {self.host} has no noex_lab: pip install noex-lab there (this version)"
        else:
            why = f"the node exited with code {code}"
        tail = " | ".join(stderr_tail[-5:]) or "(empty)"
        return f"remote node {name} on {self.host} did not start: {why}. Remote stderr: {tail}"

"""A private OpenSSH server on 127.0.0.1 for the `%noex remote` tests (`-m ssh`, `make test-ssh`).

It runs Debian's `sshd -D` on a free port with its own host key and one authorized key that
this module generates, logging in as the user running the tests (as root:
`PermitRootLogin prohibit-password`). `make test-ssh` installs openssh-server and
openssh-client when missing; when they are missing here the fixture fails with what to run,
never skips. `ssh_options` are what `%noex remote --ssh-option` gets to reach it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from noex_lab.testing.processes import kill_and_reap
from tests.helpers.waiting import wait_until_blocking

START_TIMEOUT_S = 10.0


def _tool(env: str, default: str) -> str:
    path = os.environ.get(env) or shutil.which(Path(default).name) or default
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: run `make test-ssh` (as root it installs Debian's openssh-server "
                             f"and openssh-client), or set {env}=/path/to/it")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        return sock.recv(4).startswith(b"SSH-")
    return False


@dataclass
class Sshd:
    proc: subprocess.Popen[bytes]
    port: int
    user: str
    key: Path  # the authorized private key
    wrong_key: Path  # a key that is not authorized
    ssh: str
    log: Path

    @property
    def ssh_options(self) -> list[str]:
        return [f"Port={self.port}", f"IdentityFile={self.key}", "IdentitiesOnly=yes", "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]

    def magic_options(self, key: Path | None = None) -> str:
        """The `%noex remote` options that reach this server (with another identity if given)."""
        options = [o if not o.startswith("IdentityFile=") else f"IdentityFile={key or self.key}"
                   for o in self.ssh_options]
        return " ".join(f"--ssh-option {o}" for o in options) + f" --user {self.user}"

    def stop(self) -> None:
        kill_and_reap(self.proc)


def start_sshd(directory: Path) -> Sshd:
    """Keys and a config in `directory`, then `sshd -D` on a free port; returns once it answers."""
    sshd, ssh = _tool("NOEX_TEST_SSHD", "/usr/sbin/sshd"), _tool("NOEX_TEST_SSH", "/usr/bin/ssh")
    keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
    user = getpass.getuser()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    elif not os.path.isdir("/run/sshd"):
        raise AssertionError("sshd needs /run/sshd (its privilege separation directory): run the tests as root, "
                             "or create it (mkdir -m 755 /run/sshd as root)")
    keys = {}
    for name in ("host", "user", "wrong"):
        keys[name] = directory / f"{name}_key"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(keys[name])], check=True)
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "user_key.pub").read_text())
    authorized.chmod(0o600)
    config = directory / "sshd_config"
    config.write_text(
        f"HostKey {keys['host']}\nListenAddress 127.0.0.1\nAuthorizedKeysFile {authorized}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPidFile none\nLogLevel ERROR\nMaxStartups 100\n"
    )
    log = directory / "sshd.log"
    for _ in range(5):  # another process may take the free port between the probe and the bind
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config), "-p", str(port)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        try:
            wait_until_blocking(lambda p=port, s=proc: _accepts(p) or s.poll() is not None,  # type: ignore[misc]
                                START_TIMEOUT_S, "sshd to listen", poll=0.05)
        except AssertionError:
            kill_and_reap(proc)
            raise
        if proc.poll() is None:
            return Sshd(proc, port, user, keys["user"], keys["wrong"], ssh, log)
        kill_and_reap(proc)
    raise AssertionError(f"sshd did not start: {log.read_text()[-2000:]}")


def node_pids(name_prefix: str) -> list[int]:
    """Pids of the `noex-lab node` processes whose name starts with `name_prefix` (a /proc scan:
    they may be children of sshd, not of the test)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"noex_lab.cli" in argv and b"node" in argv and b"--name" in argv:
            index = argv.index(b"--name") + 1
            if index < len(argv) and argv[index].decode(errors="replace").startswith(name_prefix):
                pids.append(int(entry.name))
    return pids

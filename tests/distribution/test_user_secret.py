"""The per-user secret file (like Erlang's cookie) and the weak-secret check; `noex-lab node` and
`noex-lab top` use the file by default. Every test uses a temporary XDG_CONFIG_HOME."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from noex_lab.distribution.user_secret import SecretFileError, load_or_create, secret_path, weak_secret_reason
from noex_lab.frontend.options import secret_from_args
from tests.helpers.cluster import REPO, NodeProcess
from tests.helpers.processes import repo_env


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def test_first_use_creates_a_private_random_secret_and_later_uses_read_it(config_home: Path) -> None:
    path = config_home / "noex-lab" / "secret"
    assert secret_path() == path and not path.exists()
    secret = load_or_create()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(secret) >= 40 and weak_secret_reason(secret) is None
    assert load_or_create() == secret == path.read_text().strip()
    assert os.listdir(path.parent) == ["secret"]  # no temporary file left behind


def test_concurrent_first_uses_all_get_the_one_secret(config_home: Path) -> None:
    code = "from noex_lab.distribution.user_secret import load_or_create; print(load_or_create())"
    env = repo_env(XDG_CONFIG_HOME=str(config_home))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outputs)) == 1 and outputs[0] == load_or_create()
    assert os.listdir(config_home / "noex-lab") == ["secret"]


def test_an_unsafe_secret_file_is_refused_and_the_error_says_what_to_do(config_home: Path, tmp_path: Path) -> None:
    path = secret_path()
    load_or_create()
    path.chmod(0o640)
    with pytest.raises(SecretFileError, match=r"accessible to group or others \(mode 0640\).*chmod 600"):
        load_or_create()
    path.unlink()
    elsewhere = tmp_path / "planted"
    elsewhere.write_text("a secret someone planted for us\n")
    elsewhere.chmod(0o600)
    path.symlink_to(elsewhere)
    with pytest.raises(SecretFileError, match="symbolic link"):
        load_or_create()
    path.unlink()
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(SecretFileError, match="8 to 4096 characters"):
        load_or_create()


def test_the_xdg_rule_falls_back_to_dot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    assert secret_path() == tmp_path / ".config" / "noex-lab" / "secret"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert secret_path() == tmp_path / ".config" / "noex-lab" / "secret"


def test_weak_secrets_are_named() -> None:
    assert weak_secret_reason("hunter2") == "shorter than 12 characters"
    assert "word with digits" in str(weak_secret_reason("sunshine2024"))
    assert weak_secret_reason("2024Password!") is not None
    assert weak_secret_reason("1212121212121212") == "fewer than 6 distinct characters"
    assert weak_secret_reason("correct horse battery staple") is None
    assert weak_secret_reason(b"Xk3-9qL_vT2mZp0w") is None


def test_no_secret_and_insecure_on_a_public_address_print_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(host="10.1.2.3", insecure=True, no_secret=True, secret_env=None)
    assert secret_from_args(args) is None
    err = capsys.readouterr().err
    assert "warning: --insecure on 10.1.2.3" in err and "warning: --no-secret" in err


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noex_lab.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(REPO))


@pytest.mark.timeout(90)
def test_node_and_top_share_the_per_user_secret_with_no_flags(tmp_path: Path) -> None:
    home = tmp_path / "config"
    env = repo_env(XDG_CONFIG_HOME=str(home), OTHER_SECRET="a different secret, 0123456789")
    node = NodeProcess("a", user_secret=True, env={"XDG_CONFIG_HOME": str(home)})
    try:
        node_id = node.wait_line("NODE ").split()[1]
        secret_file = home / "noex-lab" / "secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        seen = _cli(env, "top", node_id, "--json")  # attaches with no flags: the same file
        assert seen.returncode == 0, seen.stderr
        assert {m["name"] for m in json.loads(seen.stdout)["members"]} == {"a"}
        other = _cli(env, "top", node_id, "--json", "--secret-env", "OTHER_SECRET", "--connect-timeout", "1")
        assert other.returncode != 0
        bare = _cli(env, "top", node_id, "--json", "--no-secret", "--connect-timeout", "1")
        assert bare.returncode != 0 and "warning: --no-secret" in bare.stderr

        secret_file.chmod(0o644)
        unsafe = _cli(env, "node", "--name", "b", "--port", "0")
        assert unsafe.returncode != 0 and f"chmod 600 {secret_file}" in unsafe.stderr
    finally:
        node.stop()


def _node_with_stdin(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "noex_lab.cli", "node", "--name", "s", "--port", "0",
                           "--secret-stdin", *args], input=stdin, capture_output=True, timeout=60,
                          env=repo_env(), cwd=str(REPO))


def test_secret_stdin_reads_one_line_and_the_rest_of_stdin_stays_for_exit_on_eof() -> None:
    # the secret line, then EOF: the node starts with that secret, and leaves at the EOF that follows
    started = _node_with_stdin(b"a stdin secret 0123456789\n", "--exit-on-stdin-eof")
    assert started.returncode == 0, started.stderr
    assert started.stdout.decode().startswith("NODE s@127.0.0.1:")
    assert b"a stdin secret" not in started.stdout + started.stderr
    for stdin in (b"", b"\n"):
        empty = _node_with_stdin(stdin)
        assert empty.returncode != 0 and b"--secret-stdin: standard input ended before a secret line" in empty.stderr
    assert b"--secret-stdin: the secret line is longer than 4096 bytes" in _node_with_stdin(b"x" * 5000).stderr

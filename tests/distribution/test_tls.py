"""Encrypted node links: mutual TLS from PEM files (a throwaway CA made with the openssl CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from noex_lab import Cluster, GenServer, TLSConfig
from tests.distribution.behaviors_for_tests import Echo
from tests.helpers.cluster import REPO, NodeProcess, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=noex-test-ca", cwd=d)
    for name in ("node", "rogue"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "node.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("req", "-x509", "-key", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue",
             cwd=d)
    return {"ca": d / "ca.pem", "cert": d / "node.pem", "key": d / "node.key",
            "rogue_cert": d / "rogue.pem", "rogue_key": d / "rogue.key"}


async def test_tls_links_work_and_untrusted_certificates_are_refused(pki: dict[str, Path]) -> None:
    tls = TLSConfig.from_files(str(pki["cert"]), str(pki["key"]), str(pki["ca"]))
    a = await Cluster.start("a", port=0, tls=tls, cluster_secret="tls and a secret")
    b = await Cluster.start("b", port=0, tls=tls, seeds=[str(a.id)], cluster_secret="tls and a secret")
    await wait_until(lambda: len(a.get_nodes()) == 1 and len(b.get_nodes()) == 1, 10.0, "TLS mesh")
    with b.as_default():
        ref = await GenServer.start(Echo)
    with a.as_default():
        assert await GenServer.call(ref, ("over", b"tls")) == ("over", b"tls")
    conn = a.distribution.transport.conns[b.id]
    assert type(conn.stream).__name__ == "TLSStream"

    rogue_tls = TLSConfig.from_files(str(pki["rogue_cert"]), str(pki["rogue_key"]), str(pki["rogue_cert"]))
    rogue = await Cluster.start("rogue", port=0, tls=rogue_tls, seeds=[str(a.id)],
                                cluster_secret="tls and a secret")
    plain = await Cluster.start("plain", port=0, seeds=[str(a.id)], cluster_secret="tls and a secret")
    with pytest.raises(AssertionError):
        await wait_until(lambda: rogue.get_nodes() or plain.get_nodes(), 1.5, "an untrusted join")
    assert {i.id for i in a.get_nodes()} == {b.id}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "noex_lab.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(REPO))


@pytest.mark.timeout(90)
async def test_noex_lab_node_and_top_take_tls_from_flags(pki: dict[str, Path], procs: list[NodeProcess]) -> None:
    flags = ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), "--tls-ca", str(pki["ca"])]
    proc = NodeProcess("tlscli", *flags)
    procs.append(proc)
    node_id = await proc.started()
    tls = TLSConfig.from_files(str(pki["cert"]), str(pki["key"]), str(pki["ca"]))
    a = await Cluster.start("a", port=0, tls=tls, seeds=[str(node_id)])
    await wait_until(lambda: len(a.get_nodes()) == 1, 10.0, "the CLI node joined over TLS")
    assert type(a.distribution.transport.conns[node_id].stream).__name__ == "TLSStream"

    seen = await anyio.to_thread.run_sync(_cli, "top", str(node_id), "--json", "--no-secret", *flags)
    assert seen.returncode == 0, seen.stderr
    assert {m["name"] for m in json.loads(seen.stdout)["members"]} == {"tlscli", "a"}
    plain = await anyio.to_thread.run_sync(_cli, "top", str(node_id), "--json", "--no-secret", "--connect-timeout", "2")
    assert plain.returncode != 0  # no TLS: the node never lets it in

    half = await anyio.to_thread.run_sync(_cli, "node", "--name", "half", "--port", "0", "--tls-cert",
                                          str(pki["cert"]))
    assert half.returncode != 0
    assert "missing --tls-key, --tls-ca" in half.stderr

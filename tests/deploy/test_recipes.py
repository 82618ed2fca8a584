"""deploy/: what can be checked without Docker or Kubernetes. The YAML parses, the containers'
flags are `noex-lab node --help`'s and parse, the Kubernetes pieces reference each other, and the
compose file's three nodes form a cluster when started as plain processes with the same arguments
(only addresses and ports changed for one machine)."""

from __future__ import annotations

import importlib.machinery
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from noex_lab.cli import _parser
from noex_lab.distribution.cluster import _parse_seeds
from noex_lab.testing.processes import NodeProcess, node_env

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
APP = DEPLOY / "app"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _k8s() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "noex-cluster.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def _container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [container] = k8s["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def _option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module")
def help_flags() -> set[str]:
    result = subprocess.run([sys.executable, "-m", "noex_lab.cli", "node", "--help"], capture_output=True,
                            text=True, timeout=30, check=True)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", result.stdout))


def _commands() -> Iterator[tuple[str, list[str]]]:
    for name, service in _compose()["services"].items():
        yield f"compose {name}", list(service["command"])
    container = _container(_k8s())
    env = {"POD_NAME": "noex-0", "POD_IP": "10.0.0.7"}
    yield "kubernetes", _expand(list(container["args"]), env)


def test_every_container_flag_is_in_node_help_and_parses(help_flags: set[str]) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["noex-lab", "node"\]$', dockerfile, re.M)  # the commands are its arguments
    assert {"--metrics-port", "--log-format", "--secret-env", "--tls-cert", "--behaviors"} <= help_flags
    for where, args in _commands():
        flags = {a for a in args if a.startswith("--")}
        assert flags <= help_flags, f"{where}: {flags - help_flags} not in `noex-lab node --help`"
        parsed = _parser().parse_args(["node", *args])
        _parse_seeds(parsed.seed)  # ids and dns: seeds are well-formed
        assert parsed.secret_env and parsed.host == "0.0.0.0" and parsed.advertise_host
        assert parsed.log_format == "json" and parsed.metrics_port == 9100
        for module in parsed.behaviors:  # the modules the image carries in /app
            assert (APP / f"{module}.py").is_file(), f"{where}: no deploy/app/{module}.py"


def test_the_dockerfile_exposes_what_the_nodes_use() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("# syntax=docker/dockerfile:1\n")
    exposed = set(re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split())  # type: ignore[union-attr]
    assert exposed == {"4369/tcp", "4369/udp", "9100/tcp"}
    assert "COPY deploy/app/ /app/" in dockerfile and "WORKDIR /app" in dockerfile and "USER noex" in dockerfile


def test_compose_nodes_advertise_their_service_and_take_the_secret_from_the_environment() -> None:
    services = _compose()["services"]
    assert sorted(services) == ["node1", "node2", "node3"]
    for name, service in services.items():
        args = list(service["command"])
        assert _option(args, "--name") == name and _option(args, "--advertise-host") == service["hostname"] == name
        assert _option(args, "--seed") == "node1@node1:4369"
        assert _option(args, "--secret-env") in service["environment"]
        assert "NOEX_CLUSTER_SECRET" not in " ".join(args).replace("--secret-env NOEX_CLUSTER_SECRET", "")


def test_kubernetes_statefulset_service_dns_seed_secret_and_tls_fit_together() -> None:
    k8s = _k8s()
    service, sts = k8s["Service"], k8s["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == service["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"] == labels
    container = _container(k8s)
    args = list(container["args"])
    env = {e["name"]: e for e in container["env"]}
    assert {"POD_NAME", "POD_IP"} <= set(env) and "$(POD_NAME)" in args and "$(POD_IP)" in args
    # the dns: seed is the headless service's name, in its namespace, on the links port
    [(host, port)] = _parse_seeds([_option(args, "--seed")])[1]
    meta = service["metadata"]
    assert host == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    node_port = int(_option(args, "--port"))
    assert port == node_port and {(node_port, "TCP"), (node_port, "UDP")} <= ports
    container_ports = {(p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert {(node_port, "TCP"), (node_port, "UDP"), (int(_option(args, "--metrics-port")), "TCP")} <= container_ports
    # the cluster secret comes from a Kubernetes Secret, through the variable --secret-env names
    assert "secretKeyRef" in env[_option(args, "--secret-env")]["valueFrom"]
    # the TLS files are in a mounted Secret volume
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for flag in ("--tls-cert", "--tls-key", "--tls-ca"):
        path = Path(_option(args, flag))
        assert str(path.parent) in mounts and "secret" in volumes[mounts[str(path.parent)]], flag
    assert sts["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001  # the image's user reads them


@pytest.mark.timeout(60)
def test_the_compose_cluster_forms_when_started_as_plain_processes() -> None:
    """node1..node3 with the compose file's arguments, from deploy/app (the image's WORKDIR), on
    127.0.0.1 with free ports instead of three containers on port 4369."""
    services = _compose()["services"]
    secret = secrets.token_urlsafe(24)
    env = node_env(base={k: v for k, v in node_env().items() if k != "PYTHONPATH"})
    env["NOEX_CLUSTER_SECRET"] = secret
    procs: list[NodeProcess] = []
    ids: dict[str, str] = {}
    try:
        for name, service in services.items():
            args = list(service["command"])
            swap = {"--host": "127.0.0.1", "--advertise-host": "127.0.0.1", "--port": "0", "--metrics-port": "0"}
            for flag, value in swap.items():
                args[args.index(flag) + 1] = value
            seed_name = _option(args, "--seed").split("@")[0]
            if seed_name in ids:
                args[args.index("--seed") + 1] = ids[seed_name]
            else:
                assert seed_name == name  # the first node seeds itself (ignored)
            i = args.index("--name")  # NodeProcess adds --name, --port and --report
            del args[i:i + 2]
            i = args.index("--port")
            del args[i:i + 2]
            proc = NodeProcess(name, *args, env=env, cwd=APP)
            procs.append(proc)
            ids[name] = proc.wait_line("NODE ", 20).split()[1]
        for proc in procs:
            proc.wait_for(lambda line: line.startswith("PEERS 2 "), 15, "a full mesh of 3")
        url = procs[0].wait_line("METRICS ", 5).split()[1]
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        members = {s.labels["status"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "noex_members"}
        assert members == {"up": 2, "busy": 0}
        for proc in procs:
            assert all(line.startswith("{") for line in proc.stderr), proc.stderr  # JSON logs only
    finally:
        for proc in procs:
            proc.stop()


def test_the_image_loop_option_uses_uvloop_only_when_installed_or_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from noex_lab.cli import _loop_options

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if noex-lab[fast] were not installed
    assert _loop_options("auto") == {} and _loop_options("asyncio") == {}
    with pytest.raises(SystemExit, match=r"noex-lab\[fast\]"):
        _loop_options("uvloop")
    installed = type(sys)("uvloop")
    installed.__spec__ = importlib.machinery.ModuleSpec("uvloop", None)
    monkeypatch.setitem(sys.modules, "uvloop", installed)
    assert _loop_options("auto") == {"use_uvloop": True} and _loop_options("asyncio") == {}

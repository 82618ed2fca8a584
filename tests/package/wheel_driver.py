"""Runs INSIDE a fresh venv that has the built wheel installed (not this repository): from an
empty working directory, without PYTHONPATH. Invoked by test_wheel.py as
`VENV/bin/python wheel_driver.py README.md MODE REPO` with MODE `base` or `lab`; prints `OK <step>`
lines and exits non-zero on the first failure.

It only imports what the wheel and its extras install (no pytest, nothing from tests/)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any


def ok(step: str) -> None:
    print(f"OK {step}", flush=True)


def readme_example(readme: Path) -> str:
    match = re.search(r"^```python\n(.*?)^```", readme.read_text(), re.S | re.M)
    assert match, "README has no python block"
    return match.group(1)


def check_installed(repo: Path) -> None:
    import noex_lab

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(noex_lab.__file__).resolve()
    assert where.is_relative_to(site), f"noex_lab imported from {where}, not from the venv's {site}"
    assert not any(Path(p or ".").resolve().is_relative_to(repo) for p in sys.path), f"{repo} on {sys.path}"
    from importlib.metadata import version

    assert version("noex-lab") == noex_lab.__version__, (version("noex-lab"), noex_lab.__version__)
    ok(f"import noex_lab {noex_lab.__version__} from {where.parent}")


def check_extras_not_needed() -> None:
    """Without the extras (pytest, OpenTelemetry, prometheus-client, uvloop absent), every module
    of the wheel imports, and what needs an extra says which when it is used."""
    import importlib
    import importlib.util
    import pkgutil

    import noex_lab
    from noex_lab.errors import MissingExtraError

    for extra_module in ("pytest", "opentelemetry", "prometheus_client", "uvloop"):
        assert importlib.util.find_spec(extra_module) is None, f"{extra_module} is installed without its extra"
    names = [m.name for m in pkgutil.walk_packages(noex_lab.__path__, "noex_lab.")]
    for name in names:
        importlib.import_module(name)
    from noex_lab.otel import instrument

    try:
        instrument()
    except MissingExtraError as exc:
        assert "noex-lab[otel]" in str(exc), exc
    else:
        raise AssertionError("instrument() ran without the [otel] extra")
    ok(f"{len(names)} modules import without the extras")


def run_readme(code: str) -> None:
    """The README's first example, as `python -m asyncio` would run it (top-level await)."""
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, {"__name__": "__readme__"})
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    ok("README example")


class Kernel:
    """A real ipykernel of this venv, driven through jupyter_client."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=dict(os.environ))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=90)

    def run(self, code: str, timeout: float = 90.0) -> str:
        outputs: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                outputs.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                outputs.append(str(content["data"].get("text/plain", "")) + "\n")
            elif msg["msg_type"] == "error":
                outputs.append(f"{content['ename']}: {content['evalue']}\n" + "\n".join(content["traceback"]))

        try:
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        except (TimeoutError, queue.Empty):
            raise AssertionError(f"cell did not finish within {timeout} s: {code!r}; output: {outputs}") from None
        text = "".join(outputs)
        assert reply["content"]["status"] == "ok", f"cell failed: {code!r}\n{text}"
        return text

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def check_kernel(code: str, cwd: Path) -> None:
    kernel = Kernel(cwd)
    pids: list[int] = []
    try:
        exe = kernel.run("import sys; print(sys.executable)").strip()
        assert Path(exe).resolve() == Path(sys.executable).resolve(), (exe, sys.executable)
        kernel.run("%load_ext noex_lab")
        out = kernel.run("%noex start wheel --port 0")
        assert "wheel@127.0.0.1:" in out, out
        out = kernel.run("%noex local 1", timeout=90)
        ok("%noex start + %noex local 1")
        nodes = kernel.run("from noex_lab import Cluster\nprint(len(Cluster.get_nodes()))").strip()
        assert nodes == "1", f"the local node did not join: {nodes}\n{out}"
        pids = [int(p) for p in re.findall(r"\d+", kernel.run(
            "from noex_lab.lab import session_of\n"
            "print([n.pid for n in session_of(get_ipython()).launcher.nodes.values()])"))]
        assert len(pids) == 1, pids
        child = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert Path(child[0].decode()).resolve() == Path(sys.executable).resolve(), child
        kernel.run(code)  # the README example in the kernel, where top-level await is at home
        ok("README example in the kernel")
    finally:
        kernel.shutdown()
    from noex_lab.testing.waiting import wait_until_blocking  # (the installed wheel's)

    with contextlib.suppress(AssertionError):  # (what is left is reported below)
        wait_until_blocking(lambda: not any(pid_alive(p) for p in pids), 20.0, "the node processes to exit")
    alive = [p for p in pids if pid_alive(p)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"local node processes outlived the kernel: {alive}"
    ok("kernel shut down, its node process gone")


def check_demo() -> None:
    exe = Path(sys.executable).parent / "noex-lab"
    env = dict(os.environ, TTY_COMPATIBLE="0", COLUMNS="160")
    result = subprocess.run([str(exe), "demo", "--nodes", "3", "--duration", "3"], capture_output=True, text=True,
                            timeout=90, env=env)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "failover complete" in result.stdout and "nothing left running" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    ok("noex-lab demo")


def main() -> int:
    readme, mode, repo = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]).resolve()
    assert "PYTHONPATH" not in os.environ and not Path.cwd().resolve().is_relative_to(repo)
    code = readme_example(readme)
    check_installed(repo)
    if mode == "base":
        check_extras_not_needed()
    run_readme(code)
    if mode == "lab":
        check_kernel(code, Path.cwd())
        check_demo()
    ok("all")
    return 0


if __name__ == "__main__":
    sys.exit(main())

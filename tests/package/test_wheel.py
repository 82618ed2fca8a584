"""The package outside the repository (`make test-wheel`): build the sdist and the wheel, check
them with twine, install the wheel (not editable) into fresh venvs, and there, from an empty
directory with no PYTHONPATH, import it without extras, run the README's first example, the
Jupyter magics in a real kernel (`%noex start`, `%noex local 1`) and `noex-lab demo`.

Needs PyPI (the venvs install the wheel's dependencies); `build` and `twine` come from the
Makefile's test-wheel target."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import noex_lab

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("wheel_driver.py")
BASE = {"anyio", "sniffio", "msgpack", "rich", "ipykernel", "ipywidgets"}
EXTRAS = {"lab", "fast", "metrics", "otel", "docs", "test", "testing"}

pytestmark = pytest.mark.wheel


def _run(cmd: list[str | Path], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, REPO], timeout=600)  # the wheel is built from the sdist
    _run([sys.executable, "-m", "twine", "check", "--strict", *sorted(out.iterdir())], timeout=120)
    return out


def _wheel(dist: Path) -> Path:
    [wheel] = dist.glob("noex_lab-*-py3-none-any.whl")
    return wheel


def _clean_env(tmp: Path, venv: Path) -> dict[str, str]:
    """This environment without anything pointing into the repository or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[var] = str(tmp / var.lower())
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    return env


def _venv_with(tmp: Path, requirement: str) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=120)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", requirement], timeout=900,
         env=_clean_env(tmp, venv))
    return venv


def _drive(tmp: Path, venv: Path, mode: str) -> str:
    work = tmp / "work"
    work.mkdir()
    (work / "wheel_driver.py").write_text(DRIVER.read_text())
    (work / "README.md").write_text((REPO / "README.md").read_text())
    result = _run([venv / "bin" / "python", "wheel_driver.py", "README.md", mode, REPO], cwd=work, timeout=400,
                  env=_clean_env(tmp, venv))
    assert "OK all" in result.stdout, result.stdout
    return result.stdout


@pytest.mark.timeout(900)
def test_sdist_and_wheel_metadata(dist: Path) -> None:
    wheel = _wheel(dist)
    assert wheel.name == f"noex_lab-{noex_lab.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(zf.read(f"noex_lab-{noex_lab.__version__}.dist-info/METADATA"))
        entry_points = zf.read(f"noex_lab-{noex_lab.__version__}.dist-info/entry_points.txt").decode()
    assert meta["Version"] == noex_lab.__version__
    requires = meta.get_all("Requires-Dist") or []
    base = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requires if "extra ==" not in r}
    assert base == BASE, f"the base install is {base}"
    assert set(meta.get_all("Provides-Extra") or []) == EXTRAS
    assert "noex_lab/py.typed" in names and "noex_lab/testing/plugin.py" in names
    assert not any(n.startswith(("tests/", "docs/", "deploy/")) for n in names)
    assert "noex-lab = noex_lab.cli:main" in entry_points and "noex_lab = noex_lab.testing.plugin" in entry_points
    [sdist] = dist.glob("noex_lab-*.tar.gz")
    with tarfile.open(sdist) as tf:
        files = {Path(n).name for n in tf.getnames()}
    assert {"CHANGELOG.md", "LICENSE", "README.md", "pyproject.toml"} <= files


@pytest.mark.timeout(900)
def test_the_wheel_without_extras_imports_and_runs_the_readme_example(dist: Path, tmp_path: Path) -> None:
    venv = _venv_with(tmp_path, str(_wheel(dist)))
    out = _drive(tmp_path, venv, "base")
    assert "OK README example" in out


@pytest.mark.timeout(1200)
def test_the_wheel_with_lab_runs_the_magics_in_a_kernel_and_the_demo(dist: Path, tmp_path: Path) -> None:
    venv = _venv_with(tmp_path, f"{_wheel(dist)}[lab]")
    out = _drive(tmp_path, venv, "lab")
    for step in ("README example", "%noex start + %noex local 1", "README example in the kernel",
                 "kernel shut down, its node process gone", "noex-lab demo"):
        assert f"OK {step}" in out, out

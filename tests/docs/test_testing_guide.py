"""The testing guide's example is a real pytest run: its files are written to an empty directory
and pytest runs them there, with the plugin found through its entry point, as a user's would be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "guides" / "testing-your-behaviors.md"
FILE_BLOCK = re.compile(r'^```py title="([\w.]+)"\n(.*?)^```', re.S | re.M)


@pytest.mark.timeout(120)
def test_the_guide_example_passes_under_pytest(tmp_path: Path) -> None:
    files = dict(FILE_BLOCK.findall(GUIDE.read_text()))
    assert set(files) == {"my_behaviors.py", "test_my_behaviors.py"}, files.keys()
    assert len(files["test_my_behaviors.py"].strip().splitlines()) <= 30  # "in about 20 lines"
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from this repository
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "timeout=60", "test_my_behaviors.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for test in ("test_counter_counts", "test_counter_fails_over"):
        for backend in ("asyncio", "trio"):
            assert re.search(rf"{test}\[{backend}\] PASSED", out), out[-4000:]

"""Every ```python block in docs/ runs, so the documentation cannot rot.

Each block runs in its own interpreter (a fresh event loop and fresh ports), from the repo
root, with a deadline. Fragments that are not meant to run are written as ```text or ```sh.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            found.append((f"{page.relative_to(DOCS)}#{i + 1}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_code_to_check() -> None:
    assert len(BLOCKS) >= 20, f"only {len(BLOCKS)} python blocks found under docs/"


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_docs_code_block_runs(where: str, code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=90,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"

"""The first tutorial reaches a failover within its first 12 cells (issue acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "00-start-here.ipynb"


def test_start_here_shows_the_failover_within_twelve_cells() -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    sources = ["".join(cell["source"]) for cell in cells]
    kill = next(i for i, text in enumerate(sources) if text.lstrip().startswith("%noex kill"))
    shown = next(i for i in range(kill + 1, len(cells)) if cells[i]["cell_type"] == "code")
    assert "child_migrated" in "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for output in cells[shown]["outputs"]
    )
    assert shown + 1 <= 12, f"the failover is shown in cell {shown + 1}"
    assert sources[1].strip() == "%load_ext noex_lab"

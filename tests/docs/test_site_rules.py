"""Rules for the docs site: it opens from file://, cites no SPEC section (SPEC is not in the
repository), documents every GenServer callback, and the concept pages have diagrams."""

from __future__ import annotations

import re
from pathlib import Path

import noex_lab.core.genserver as genserver

REPO = Path(__file__).resolve().parents[2]


def test_no_spec_section_references_in_docs_or_docstrings() -> None:
    cited = [f"{path.relative_to(REPO)}:{n}" for folder in ("docs", "noex_lab")
             for path in sorted((REPO / folder).rglob("*")) if path.suffix in (".md", ".py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"SPEC\s*§", line)]
    assert not cited, cited


def test_site_opens_from_the_file_system_and_has_diagrams() -> None:
    config = (REPO / "mkdocs.yml").read_text()
    assert re.search(r"^use_directory_urls: false$", config, re.M)
    assert "name: mermaid" in config and "docs-serve:" in (REPO / "Makefile").read_text()
    for page in ("processes", "supervision", "cluster", "distributed-supervisor", "global-registry"):
        assert "```mermaid" in (REPO / "docs" / "concepts" / f"{page}.md").read_text(), page


def test_every_genserver_callback_is_documented() -> None:
    doc = genserver.GenServer.__doc__ or ""
    for callback in ("init", "handle_call", "handle_cast", "handle_info", "terminate"):
        assert f"`{callback}(self" in doc, callback
    for method in ("init", "handle_call", "handle_cast", "handle_info"):
        assert getattr(genserver.GenServer, method).__doc__, method

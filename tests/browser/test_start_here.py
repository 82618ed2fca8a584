"""End to end in a real browser: JupyterLab (headless) runs `00-start-here.ipynb` with *Run → Run
All Cells* in Debian's chromium driven by Python playwright, and the rendered widgets show the
failover: the `ClusterView` shows the killed node down (in its table and in its topology picture,
its link cut), the `SupervisorView` shows its children moved to the nodes that are left (in its
table and its tree); saved, its kernel shut down and opened again, the notebook shows the views'
last state, not "Error displaying widget: model not found". `05-debugging-a-cluster.ipynb`, run
the same way: its remote ZeroDivisionError shows the line of the `%%noex behavior` cell and the
node it ran on, and the dashboard sits in the side panel.

Run by `make test-browser` only (marker `browser`, deselected by default in pyproject.toml): it
needs `/usr/bin/chromium` (or $CHROMIUM) and the `playwright` package, which that target installs.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.waiting import wait_pids_gone, wait_until_blocking

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
NOTEBOOK = "00-start-here.ipynb"
DEBUGGING = "05-debugging-a-cluster.ipynb"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


# ----------------------------------------------------------------------------------- processes
def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (kernels and the node processes they started)."""
    tree = _children_of()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterLab:
    """`jupyter lab` on a free loopback port with a random token, serving `notebook_dir`."""

    def __init__(self, notebook_dir: Path, home: Path) -> None:
        self.notebook_dir = notebook_dir
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.log_path = home / "jupyterlab.log"
        env = dict(os.environ)
        env.update({  # no user configuration in, no state out
            "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
        })
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        # every cell stays in the page (JupyterLab 4 leaves cells out of view out of it by default),
        # so the test can read the outputs of a long notebook without scrolling
        tracker = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={self.token}", f"--notebook-dir={notebook_dir}",
             "--ServerApp.port_retries=0", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(notebook_dir),
            start_new_session=True,
        )
        self.known: set[int] = set()  # every descendant seen: kernels, local nodes

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?token={self.token}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=5) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url("/api/status"), timeout=2) as response:
                return bool(json.loads(response.read()))
        except OSError:
            return False

    def note_descendants(self) -> list[int]:
        self.known.update(descendants(self.proc.pid))
        return sorted(self.known)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (it shuts its kernels down), then SIGKILL whatever it started that is left, by PID."""
        pids = self.note_descendants()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in wait_pids_gone(pids, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[JupyterLab]:
    notebooks = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks)
    # The stored outputs (and widget state) of the copy are removed: everything the test sees
    # on the page comes from this run.
    for name in (NOTEBOOK, DEBUGGING):
        path = notebooks / name
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb["metadata"].pop("widgets", None)
        path.write_text(json.dumps(nb, indent=1))
    server = JupyterLab(notebooks, tmp_path)
    try:
        wait_until_blocking(server.ready, 90, "JupyterLab to answer /api/status", poll=0.25)
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------------- the page
# rows of cell texts; a status cell starts with a colored dot, which is left out
ROWS_JS = """(el) => Array.from(el.querySelectorAll('table')).map(t =>
    Array.from(t.querySelectorAll('tr')).map(r => Array.from(r.children).map(
        c => c.textContent.replace('\u25cf', '').trim())))"""


def _tables(locator: Any) -> list[list[list[str]]]:
    """The tables inside a widget output, as rows of cell texts (the first row of each: its header)."""
    tables: list[list[list[str]]] = locator.evaluate(ROWS_JS)
    return tables


def _by_column(table: list[list[str]], key: str) -> dict[str, dict[str, str]]:
    header, *rows = table
    return {row[header.index(key)]: dict(zip(header, row, strict=False)) for row in rows if len(row) == len(header)}


def open_and_run_all(page: Any, lab: JupyterLab, name: str, code_cell_count: int, shot: Path | None = None) -> Any:
    """Open notebook `name`, dismiss the news toast, Run All Cells, wait until every cell ran;
    returns the kernel status locator."""
    page.goto(lab.url(f"/lab/tree/{name}"))
    page.wait_for_selector(".jp-NotebookPanel", timeout=90_000)
    status = page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle").first
    status.wait_for(timeout=90_000)
    # the "would you like to get notified about official Jupyter news?" toast, if shown
    toast = page.locator(".jp-toast-container, .Toastify").filter(has_text="Jupyter news")
    with contextlib.suppress(Exception):
        toast.first.wait_for(timeout=5_000)
    if toast.count():
        toast.get_by_role("button", name="No").first.click()
        toast.first.wait_for(state="detached", timeout=10_000)
    if shot is not None:
        page.screenshot(path=str(shot))
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")

    def all_ran() -> bool:  # every code cell shows its execution count: [n]:
        texts = prompts.all_text_contents()
        return len(texts) == code_cell_count and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts)

    wait_until_blocking(all_ran, 180, "every code cell to run", poll=0.5)
    lab.note_descendants()  # the kernel and the local nodes it started
    status.wait_for(timeout=60_000)
    return status


def test_run_all_shows_the_failover_in_the_widgets(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make test-browser` (it installs chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = {name: ARTIFACTS / f"start-here-{name}.png" for name in ("opened", "after-run", "cluster-view",
                                                                    "supervisor-view", "topology", "tree",
                                                                    "reopened")}
    for shot in [*shots.values(), ARTIFACTS / "start-here-failure.png"]:
        shot.unlink(missing_ok=True)
    nb = json.loads((REPO / "notebooks" / NOTEBOOK).read_text())
    code_cell_count = sum(cell["cell_type"] == "code" for cell in nb["cells"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
        except BaseException:
            browser.close()
            raise
        try:
            page.set_default_timeout(30_000)
            open_and_run_all(page, lab, NOTEBOOK, code_cell_count, shots["opened"])
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                                  ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, f"a cell failed or wrote to stderr: {errors.all_text_contents()}"

            # the node that %noex kill killed, as this run named it (with its port)
            killed = page.locator(".jp-OutputArea-output", has_text="killed local node local2").first
            match = re.search(r"\((local2@127\.0\.0\.1:\d+),", killed.text_content() or "")
            assert match, killed.text_content()
            local2 = match.group(1)

            cluster = page.locator(".widget-html-content", has_text="cluster seen from app@").first
            supervisor = page.locator(".widget-html-content", has_text="restart log").first

            seen: list[Any] = []

            def failover_rendered() -> bool:
                seen[:] = [_tables(cluster), _tables(supervisor)]
                members = _by_column(seen[0][0], "node")
                children_table, log = seen[1]
                # (an empty table renders one cell, "(no restarts yet)": rows of another shape are not entries)
                moved = [row for row in log[1:] if len(row) > 1 and row[1] == "child_migrated"]
                children = [c for c in children_table[1:] if len(c) > 2]
                return (members.get(local2, {}).get("status", "").startswith("down")
                        and len(moved) == 2 and bool(children) and all(c[2] != local2 for c in children))

            try:
                wait_until_blocking(failover_rendered, 30, "the widgets to show the failover", poll=0.25)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the widgets show {seen}") from None

            # ClusterView: the killed node is down (its connection closed), the others are up
            members = _by_column(_tables(cluster)[0], "node")
            assert members[local2]["status"] == "down (connection_closed)", members
            up = sorted(node.split("@")[0] for node, row in members.items() if row["status"] == "up")
            assert up == ["local1", "local3"], members
            assert members[next(n for n in members if n.startswith("app@"))]["status"] == "up (this node)"

            # SupervisorView: w2 and w6 moved off local2 (one restart each, last exit noconnection),
            # the six others never stopped; the restart log shows both migrations
            children_table, log = _tables(supervisor)
            children = _by_column(children_table, "child")
            assert sorted(children) == [f"w{i}" for i in range(8)], children
            for child_id, row in children.items():
                assert row["status"] == "running" and row["node"] != local2, row
                if child_id in ("w2", "w6"):
                    assert (row["restarts"], row["last exit"]) == ("1", "noconnection"), row
                else:
                    assert (row["restarts"], row["last exit"]) == ("0", ""), row
            migrated = sorted((row[2], row[3].split(" moved from ")[1].split(" to ")[0])
                              for row in log[1:] if row[1] == "child_migrated")
            assert migrated == [("w2", local2), ("w6", local2)], log

            # the pictures: local2 drawn down with its link cut; every child in a column of a live node
            topology = cluster.locator("svg.noex-topology")
            assert topology.locator(f"g.noex-node-down[data-node='{local2}']").count() == 1
            assert topology.locator("line.noex-link-cut").count() >= 1
            tree = supervisor.locator("svg.noex-tree")
            assert tree.locator("g.noex-child-running").count() == 8
            assert tree.locator("g.noex-child[data-node='local2']").count() == 0

            cluster.scroll_into_view_if_needed()
            cluster.screenshot(path=str(shots["cluster-view"]))
            topology.screenshot(path=str(shots["topology"]))
            supervisor.scroll_into_view_if_needed()
            supervisor.screenshot(path=str(shots["supervisor-view"]))
            tree.screenshot(path=str(shots["tree"]))
            page.screenshot(path=str(shots["after-run"]))

            # saved, the kernel shut down, opened again: the views show their last state (the widget
            # state saved with the notebook), not "Error displaying widget: model not found"
            page.keyboard.press("Control+s")
            saved = lab.notebook_dir / NOTEBOOK
            wait_until_blocking(lambda: "noex-topology" in json.dumps(json.loads(saved.read_text())["metadata"]
                                                                      .get("widgets", {})), 30,
                                "the widget state in the saved notebook", poll=0.5)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Shut Down Kernel$")).click()
            wait_until_blocking(lambda: not lab.api("/api/kernels"), 60, "the kernel to shut down", poll=0.5)
            page.reload()
            page.wait_for_selector(".jp-NotebookPanel", timeout=90_000)
            with contextlib.suppress(Exception):  # a "Select Kernel" dialog, if the page asks
                page.locator(".jp-Dialog").first.wait_for(timeout=3_000)
                page.keyboard.press("Escape")
            reopened = page.locator(".widget-html-content", has_text="cluster seen from app@").first
            reopened.wait_for(timeout=60_000)
            assert reopened.locator("svg.noex-topology").count() == 1
            assert page.get_by_text("Error displaying widget").count() == 0
            page.screenshot(path=str(shots["reopened"]))
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "start-here-failure.png"))
            raise
        finally:
            browser.close()
    for shot in shots.values():
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"


def test_a_remote_crash_shows_the_users_line_and_the_node(lab: JupyterLab) -> None:
    """Notebook 05, Run All: the remote ZeroDivisionError shows the line of the `%%noex behavior`
    cell and the node it ran on; the dashboard sits in the side panel with its pictures."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make test-browser` (it installs chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = {name: ARTIFACTS / f"debugging-{name}.png" for name in ("remote-error", "dashboard")}
    for shot in [*shots.values(), ARTIFACTS / "debugging-failure.png"]:
        shot.unlink(missing_ok=True)
    nb = json.loads((REPO / "notebooks" / DEBUGGING).read_text())
    code_cell_count = sum(cell["cell_type"] == "code" for cell in nb["cells"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
        except BaseException:
            browser.close()
            raise
        try:
            page.set_default_timeout(30_000)
            open_and_run_all(page, lab, DEBUGGING, code_cell_count)
            error = page.locator(".jp-OutputArea-output", has_text="remote traceback: process")
            assert error.count() == 1, error.all_text_contents()  # the one cell tagged raises-exception
            text = error.first.text_content() or ""
            behavior_cell = re.search(r"Cell In\[(\d+)\] \(%%noex behavior averager\), line 15, in handle_call", text)
            assert behavior_cell, text
            assert "return sum(numbers) / len(numbers), numbers" in text and "ZeroDivisionError" in text
            assert re.search(r"on node local2@127\.0\.0\.1:\d+", text), text
            assert "routing.py" not in text and re.search(r"\[\d+ noex_lab frames? folded\]", text), text
            error.first.scroll_into_view_if_needed()
            error.first.screenshot(path=str(shots["remote-error"]))
            # the dashboard, docked in the side panel: the topology with local2 down, the tree
            board = page.locator(".widget-html-content", has_text="noex dashboard").first
            board.wait_for(timeout=30_000)
            assert page.locator(".jp-NotebookPanel .widget-html-content", has_text="noex dashboard").count() == 0
            assert page.locator("svg.noex-topology g.noex-node-down").count() >= 1
            page.screenshot(path=str(shots["dashboard"]))
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "debugging-failure.png"))
            raise
        finally:
            browser.close()
    for shot in shots.values():
        assert shot.stat().st_size > 5_000, f"{shot} looks empty"

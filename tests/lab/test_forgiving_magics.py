"""Forgiving magics in a real ipykernel: a cell that loads the extension and runs %noex lines runs
them in order with its output under that cell, a failing unawaited line stops the lines after it,
an argument naming a notebook variable stands for its value, and `%noex help` fits one screen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(90)

PEERS = "sorted(n.id.name for n in __import__('noex_lab').current_node().get_nodes())"


@pytest.fixture(scope="module")
def k() -> Iterator[Kernel]:
    kernel = Kernel()
    try:
        yield kernel
    finally:
        shutdown_and_reap(kernel)


def output_of(k: Kernel, msg_id: str) -> str:
    """Every text the kernel sent under one cell, also after the cell went idle."""
    parts = []
    for m in k.messages:
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "stream":
            parts.append(m["content"]["text"])
        elif m["msg_type"] in ("display_data", "execute_result"):
            parts.append(str(m["content"]["data"].get("text/plain", "")) + "\n")
    return "".join(parts)


def test_load_start_and_local_in_one_cell_run_in_order_under_that_cell(k: Kernel) -> None:
    cell = k.ok("%load_ext noex_lab\n%noex start fm\n%noex local 1")
    k.pump_until(lambda: "local1" in output_of(k, cell.msg_id), 60, "the local node under the cell")
    text = output_of(k, cell.msg_id)
    assert "fm@127.0.0.1:" in text and text.index("fm@127.0.0.1:") < text.index("local1"), text
    assert "failed" not in text, text
    assert k.eval(PEERS) == ["local1"]


def test_an_unawaited_line_that_fails_stops_the_next_and_says_so_under_its_cell(k: Kernel) -> None:
    cell = k.ok("for line in ['kill nobody', 'local 2']:  # a loop: the lines are not awaited\n"
                "    get_ipython().run_line_magic('noex', line)")
    k.pump_until(lambda: "did not run" in output_of(k, cell.msg_id), 30, "both lines to be reported")
    text = output_of(k, cell.msg_id)
    assert "%noex kill nobody failed: " in text, text
    assert "%noex local 2 did not run: %noex kill nobody before it failed" in text, text
    assert k.eval(PEERS) == ["local1"]  # no local2


def test_a_target_naming_a_variable_is_that_ref(k: Kernel) -> None:
    k.ok("from noex_lab import GenServer\n"
         "class Box(GenServer):\n"
         "    def init(self, arg):\n"
         "        return arg\n"
         "ref3 = await GenServer.start(Box, 'in the box')\n"
         "node_var = __import__('noex_lab').current_node()")
    r = k.ok("%noex state ref3")
    assert "Box" in r.text and "state: 'in the box'" in r.text, r.text
    assert "Box" in k.ok("%noex ps node_var").text
    r = k.execute("%noex state nobody_by_that_name", allow_error=True)  # not a variable: a name, as before
    assert r.ename == "NotRegisteredError"


def test_help_fits_one_screen(k: Kernel) -> None:
    lines = k.ok("%noex help").stdout.rstrip().splitlines()
    assert len(lines) <= 30 and max(len(line) for line in lines) <= 110, lines
    assert any(line.strip().startswith("state TARGET") for line in lines)
    assert "--secret-env" in k.ok("%noex help start").stdout

"""Hot upgrade from a re-run cell and the process tools, in a real ipykernel: a counter at 41
counts on to 42 with the new handle_call; `%noex upgrade` shows the versions on every node;
`%noex suspend/resume/replace-state/stats/status` act on local and remote processes."""

from __future__ import annotations

import re

import pytest

from tests.lab.kernel_harness import Kernel

pytestmark = pytest.mark.timeout(120)

COUNTER = '''%%noex behavior counter
from noex_lab import GenServer

class Counter(GenServer):
    vsn = VSN

    def init(self, arg):
        return arg or 0

    def handle_call(self, msg, state):
        return ("vVSN", state), state

    def handle_cast(self, msg, state):
        return state + 1
'''


def counter(vsn: int, code_change: str = "") -> str:
    return COUNTER.replace("VSN", str(vsn)) + code_change


def test_a_counter_keeps_counting_after_its_cell_is_re_run_and_the_tools_work(kernel: Kernel) -> None:
    k = kernel
    k.ok("%noex start kern")
    k.ok("%noex local 1", timeout=60)
    k.ok(counter(1))
    k.ok("from noex_lab import GenServer, RemoteSpawn, current_node\n"
         "c = await GenServer.start(Counter, 40, name='c')\n"
         "GenServer.cast(c, 'inc')\n"
         "assert await GenServer.call(c, 'get') == ('v1', 41)\n"
         "local1 = current_node().get_nodes()[0].id\n"
         "r = await RemoteSpawn.spawn('counter', local1, arg=7, name='r', registration='local')")

    r = k.ok(counter(2))  # the cell, re-run with a new handle_call

    assert "registered here (1 process upgraded here); shipped to 1 of 1 other node(s)" in r.text, r.text
    assert "loaded Counter; 1 process upgraded" in r.text
    k.ok("GenServer.cast(c, 'inc')\n"
         "assert await GenServer.call(c, 'get') == ('v2', 42)  # same process, same state, new code\n"
         "assert await GenServer.call(r, 'get') == ('v2', 7)")
    table = k.ok("%noex upgrade counter").text
    assert re.search(r"kern@127\.0\.0\.1:\d+\s+<0\.\d+@kern@\S+>\s+c\s+counter\s+Counter\s+2\s+current", table), table
    assert re.search(r"local1@127\.0\.0\.1:\d+\s+<0\.\d+@local1@\S+>\s+r\s+counter\s+Counter\s+2\s+current", table)

    broken = counter(3, "\n    def code_change(self, old_vsn, state, extra):\n        return state['n']\n")
    r = k.ok(broken)
    assert r.text.count("kept the old code: code_change raised") == 2 and "TypeError" in r.text
    table = k.ok("%noex upgrade").text
    assert table.count("upgrade failed: TypeError") == 2 and "2 process(es): 0 on the current code" in table
    k.ok("assert await GenServer.call(c, 'get') == ('v2', 42)  # still running, on version 2")

    # the process tools, on the kernel's process and on the remote one
    assert "suspended; 0 message(s) queued" in k.ok("%noex suspend c").text
    k.ok("GenServer.cast(c, 'inc')")
    status = k.ok("%noex status c").text
    assert "status               suspended" in status and "queue / high-water   1 /" in status, status
    r = k.ok('%noex replace-state c "lambda s: s + 100"')
    assert "state: 142" in r.text
    assert "resumed; 1 message(s) queued" in k.ok("%noex resume c").text
    k.ok("assert await GenServer.call(c, 'get') == ('v2', 143)")
    k.ok("%noex stats r --node local1 --on")
    k.ok("GenServer.cast(r, 'inc')\nawait GenServer.call(r, 'get')")
    stats = k.ok("%noex stats r --node local1").text
    assert re.search(r"messages handled\s+3", stats) and "statistics           on" in stats, stats
    err = k.execute('%noex replace-state c "nope"', allow_error=True)
    assert err.ename == "LabError" and "cannot evaluate FUNCTION" in str(err.error)

"""The front ends' one child-process launcher (`noex_lab.frontend.processes.WatchedProcess`) as
the notebook uses it for its long-lived nodes: each line handed to a callback as it comes, a
bounded history, the exit code once both outputs ended, bad bytes decoded, a failing callback
logged and never fatal to the reader. Real OS processes."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import pytest

from noex_lab.frontend.processes import WatchedProcess

CHILD = r"""
import sys
for i in range(50):
    print(f"out {i}", flush=True)
sys.stderr.buffer.write(b"bad \xff byte\n"); sys.stderr.flush()
sys.stdout.buffer.write(b"last \xfe\n"); sys.stdout.flush()
sys.exit(3)
"""


def _run(on_line: object) -> tuple[WatchedProcess, threading.Event, list[int]]:
    ended = threading.Event()
    codes: list[int] = []

    def on_end(code: int) -> None:
        codes.append(code)
        ended.set()

    proc = WatchedProcess([sys.executable, "-c", CHILD], label="child", keep=5,
                          on_line=on_line, on_end=on_end)  # type: ignore[arg-type]
    return proc, ended, codes


@pytest.mark.timeout(30)
def test_lines_reach_the_callback_in_order_history_is_bounded_and_the_end_comes_last() -> None:
    seen: list[tuple[str, str]] = []
    proc, ended, codes = _run(lambda stream, line: seen.append((stream, line)))
    try:
        assert ended.wait(20), "no end reported"
        out = [line for stream, line in seen if stream == "stdout"]
        assert out == [f"out {i}" for i in range(50)] + ["last \ufffd"]  # every line, in order, decoded
        assert ("stderr", "bad \ufffd byte") in seen  # a bad byte does not stop the reader
        assert codes == [3]  # once, after the last line
        assert proc.history == [f"out {i}" for i in range(46, 50)] + ["last \ufffd"]  # keep=5
        assert proc.output_ended
    finally:
        proc.stop()


@pytest.mark.timeout(30)
def test_a_failing_line_callback_is_logged_and_reading_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def explode(stream: str, line: str) -> None:
        raise ZeroDivisionError(line)

    with caplog.at_level(logging.ERROR, logger="noex_lab.frontend.processes"):
        proc, ended, codes = _run(explode)
        try:
            assert ended.wait(20), "the reader died with the callback"
            assert codes == [3] and proc.history[-1] == "last \ufffd"
        finally:
            proc.stop()
    failures = [r for r in caplog.records if "callback failed" in r.getMessage()]
    assert len(failures) == 52 and all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in failures)


@pytest.mark.timeout(30)
def test_close_stdin_ends_a_child_that_waits_for_eof_and_a_late_signal_is_a_no_op() -> None:
    proc = WatchedProcess([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(5)"], label="eof child")
    try:
        assert proc.alive
        proc.close_stdin()
        assert proc.proc.wait(timeout=20) == 5 and not proc.alive
        proc.signal(signal.SIGKILL)  # exited: nothing to signal, nothing raised
        proc.close_stdin()  # twice: harmless
    finally:
        proc.stop()

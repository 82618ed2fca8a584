"""Background work in a notebook: where its output and its errors go: never
into whichever cell happens to run, and no error is lost.

A cell's output area belongs to the cell that is running; work that runs in the background
(processes, node tasks, the liveness thread, local node processes) must not write into it.
While the extension is loaded:

- `print` inside a process (any code running in a process's task) becomes an `output` event
  on that process's node, shown by `EventLog`, instead of landing in some cell;
- records of the `noex_lab` logger become `log` events on the kernel's node;
- errors from background work (the node's `error` events, exceptions of asyncio tasks nobody
  awaited, `noex_lab` log records of level ERROR) are shown in the event log *and* re-reported
  once, under the next cell that runs (an IPython `post_run_cell` hook);
- crash reports (the kernel node's `crash_report` events, its own and its peers') are kept for
  `%noex crashes` and shown, grouped, in one banner under the next cell (see crashes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, TextIO

from ..core.crash_report import CrashReport
from ..core.errors import CallError
from ..core.events import NodeEvent
from ..core.node import Node, current_process, running_nodes
from .crashes import CrashLog
from .reprs import clock

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

MAX_PENDING = 50


@dataclass(frozen=True)
class BackgroundError:
    at: float
    where: str
    what: str
    error: str

    def __str__(self) -> str:
        return f"{clock(self.at)} [{self.where}] {self.what}: {self.error}"


class BackgroundErrors:
    """What the post_run_cell hook displays: the background errors since the last report."""

    def __init__(self, errors: list[BackgroundError], dropped: int = 0) -> None:
        self.errors = errors
        self.dropped = dropped

    def _header(self) -> str:
        n = len(self.errors) + self.dropped
        return f"noex: {n} background error{'s' if n != 1 else ''} since the last cell (also in the event log)"

    def _repr_html_(self) -> str:
        items = "".join(
            f"<li><code>{escape(clock(e.at))}</code> <b>{escape(e.what)}</b> "
            f"<span style='color:#666'>[{escape(e.where)}]</span><br><code>{escape(e.error)}</code></li>"
            for e in self.errors
        )
        more = f"<li>… and {self.dropped} more</li>" if self.dropped else ""
        return (
            "<div style='border-left:3px solid #cf222e;padding:2px 8px;margin:4px 0;background:#fff5f5'>"
            f"<div style='color:#cf222e;font-weight:bold'>{escape(self._header())}</div>"
            f"<ul style='margin:2px 0'>{items}{more}</ul></div>"
        )

    def __repr__(self) -> str:
        lines = [self._header(), *(f"  {e}" for e in self.errors)]
        if self.dropped:
            lines.append(f"  ... and {self.dropped} more")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


class ProcessOutput:
    """A stand-in for sys.stdout / sys.stderr: text written from inside a process becomes an
    `output` event of its node; everything else goes to the real stream unchanged."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name
        self._partial: dict[Any, str] = {}

    @property
    def wrapped(self) -> TextIO:
        return self._stream

    def write(self, text: str) -> int:
        proc = current_process()
        if proc is None:
            return self._stream.write(text)
        buffered = self._partial.pop(proc.ref, "") + text
        *lines, rest = buffered.split("\n")
        if rest:
            self._partial[proc.ref] = rest[-10_000:]
        for line in lines:
            proc.node.events.emit("output", ref=proc.ref, stream=self._name, line=line)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _LogHandler(logging.Handler):
    """`noex_lab` log records -> `log` events (and ERROR records -> background errors)."""

    def __init__(self, reporter: BackgroundReporter) -> None:
        super().__init__(logging.WARNING)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        if record.funcName == "report_error" and record.module == "events":
            return  # the node's `error` event carries it already
        if hasattr(record, "noex_crash_report"):
            return  # the node's `crash_report` event carries it (see crashes.py)
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.reporter.call_on_loop(lambda: self.reporter.log_record(record.levelno, record.levelname, message))


class BackgroundReporter:
    """Collects background errors and shows them under the next cell; routes background output."""

    def __init__(self, ip: InteractiveShell, node_for_logs: Callable[[], Node | None]) -> None:
        self.ip = ip
        self.node_for_logs = node_for_logs
        self.pending: deque[BackgroundError] = deque(maxlen=MAX_PENDING)
        self.dropped = 0
        self._watched: dict[Node, Callable[[], None]] = {}
        self.watched = self._watched.keys()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self._previous_handler: Any = None
        self._log_handler: _LogHandler | None = None
        self._streams: tuple[Any, Any] | None = None
        self.reported = 0  # how many reports the hook displayed (a test and debugging aid)
        self.crashes = CrashLog()

    # --------------------------------------------------------------- install / uninstall
    def install(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        if self._loop is not None:
            self._previous_handler = self._loop.get_exception_handler()
            self._loop.set_exception_handler(self._loop_exception)
        self._log_handler = _LogHandler(self)
        logging.getLogger("noex_lab").addHandler(self._log_handler)
        if not isinstance(sys.stdout, ProcessOutput) and not isinstance(sys.stderr, ProcessOutput):
            self._streams = (sys.stdout, sys.stderr)
            sys.stdout = ProcessOutput(sys.stdout, "stdout")
            sys.stderr = ProcessOutput(sys.stderr, "stderr")
        self.ip.events.register("post_run_cell", self.post_run_cell)
        self.watch_running_nodes()

    def uninstall(self) -> None:
        with contextlib.suppress(ValueError):
            self.ip.events.unregister("post_run_cell", self.post_run_cell)
        if self._streams is not None:
            if isinstance(sys.stdout, ProcessOutput):
                sys.stdout = self._streams[0]
            if isinstance(sys.stderr, ProcessOutput):
                sys.stderr = self._streams[1]
            self._streams = None
        if self._log_handler is not None:
            logging.getLogger("noex_lab").removeHandler(self._log_handler)
            self._log_handler = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.set_exception_handler(self._previous_handler)
        for unsubscribe in self._watched.values():
            with contextlib.suppress(Exception):
                unsubscribe()
        self._watched.clear()

    # --------------------------------------------------------------- sources
    def watch(self, node: Node) -> None:
        """Collect the `error` events of `node`."""
        if node in self._watched or not node.running:
            return
        where = node.display_name

        def on_event(event: NodeEvent) -> None:
            if event.kind == "error":
                self.add(BackgroundError(event.at, node.display_name or where, str(event.data.get("what", "error")),
                                         str(event.data.get("error", ""))))
            elif event.kind == "crash_report":
                report = event.data.get("report")
                if isinstance(report, CrashReport):
                    self.crashes.add(report)

        self._watched[node] = node.events.subscribe(on_event)

    def watch_running_nodes(self) -> None:
        with contextlib.suppress(Exception):  # no loop (yet): nothing to watch
            for node in running_nodes():
                self.watch(node)
        for node in [n for n in self._watched if not n.running]:
            self._watched.pop(node)()

    def add(self, error: BackgroundError) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(error)

    def call_on_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn()
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn)

    def log_record(self, level: int, level_name: str, message: str) -> None:
        node = self.node_for_logs()
        if node is not None and node.running:
            node.events.emit("log", level=level_name, message=message)
        if level >= logging.ERROR:
            where = node.display_name if node is not None else "noex_lab"
            self.add(BackgroundError(time.time(), where, f"log {level_name}", message))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "asyncio error"))
        error = f"{type(exc).__name__}: {exc}" if exc is not None else message
        what = message
        task = context.get("task") or context.get("future")
        if task is not None:
            what = f"{message} ({getattr(task, 'get_name', lambda: 'task')()})"
        node = self.node_for_logs()
        if node is not None and node.running:
            node.events.emit("error", what=what, error=error)  # the subscription adds it to pending
            if node not in self._watched:
                self.add(BackgroundError(time.time(), "asyncio", what, error))
        else:
            self.add(BackgroundError(time.time(), "asyncio", what, error))
        previous = self._previous_handler
        if previous is not None:
            previous(loop, context)

    # --------------------------------------------------------------- the hook
    def take(self) -> BackgroundErrors | None:
        if not self.pending and not self.dropped:
            return None
        report = BackgroundErrors(list(self.pending), self.dropped)
        self.pending.clear()
        self.dropped = 0
        return report

    def post_run_cell(self, result: Any = None) -> None:
        from .reprs import display

        self.watch_running_nodes()
        error = getattr(result, "error_in_exec", None)
        if isinstance(error, CallError) and error.process is not None:
            self.crashes.shown_by_cell(error.process)
        report = self.take()
        if report is not None:
            self.reported += 1
            display(report)
        banner = self.crashes.take_banner()
        if banner is not None:
            self.reported += 1
            display(banner)

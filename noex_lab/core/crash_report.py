"""Crash reports: what Erlang's proc_lib writes for every process that crashes.

A process *crashed* when it ended with an abnormal reason of its own making: an exception in a
callback (including `init` and `terminate`), a `Stop` with a reason other than "normal" or
"shutdown", or a mailbox overflow. A process killed by an exit signal (a linked process died,
`node.kill()`, the node lost a peer) did not crash: its linked process's report says why.

For each crash the node (only then: nothing runs on a normal exit)
- logs the report on the `noex_lab.crash` logger (level ERROR, the report's text as message and
  the report itself as `record.noex_crash_report`),
- emits a `crash_report` event (`report=`),
- calls the listeners registered with `on_crash` (the distribution layer forwards the report
  to the nodes that subscribed: a notebook sees the crashes of the whole cluster).
"""

from __future__ import annotations

import logging
import reprlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import tracebacks
from .errors import InvalidArgumentError
from .node_id import NodeId
from .reasons import KILLED, MAILBOX_OVERFLOW, NORMAL, SHUTDOWN, ErrorReason, ExitReason
from .refs import ProcessRef

if TYPE_CHECKING:
    from .node import Node
    from .process import Process

log = logging.getLogger("noex_lab.crash")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200
_repr.maxlevel = 4


def short_repr(value: Any) -> str:
    """A bounded repr that never raises (a message can be anything)."""
    try:
        text = _repr.repr(value)
    except Exception as exc:
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= 300 else text[:299] + "…"


@dataclass(frozen=True)
class CrashReport:
    """One crash: who (process, name, behavior, node), why (reason, traceback), while doing what
    (the last message), and under whom (parent). `count` > 1 when one report stands for a run of
    crashes a node did not forward one by one (a crash loop)."""

    at: float
    node: NodeId | None
    process: ProcessRef
    name: str | None
    behavior: str
    reason: ExitReason
    last_message: str = ""
    parent: ProcessRef | None = None
    queue_len: int = 0
    count: int = 1

    @property
    def traceback(self) -> str:
        return self.reason.traceback if isinstance(self.reason, ErrorReason) else ""

    @property
    def where(self) -> str:
        return str(self.node) if self.node is not None else "this node"

    def key(self) -> tuple[Any, ...]:
        """What makes crashes "the same" when grouping: node, behavior and the exception type (the
        message often carries data that differs from one crash of a loop to the next)."""
        kind = self.reason.exc_type if isinstance(self.reason, ErrorReason) else str(self.reason)
        return (self.node, self.behavior, kind)

    def summary(self) -> str:
        who = f"{self.behavior} {self.process}" + (f" ({self.name})" if self.name else "")
        times = f" {self.count} times" if self.count > 1 else ""
        last = f" while handling {self.last_message}" if self.last_message else ""
        return f"{who} on {self.where} crashed{times}: {self.reason}{last}"

    def __str__(self) -> str:
        return self.summary()

    def text(self, *, full: bool | None = None) -> str:
        """The report, Erlang style: a header line, then one indented `key: value` line each."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        lines = [f"=CRASH REPORT==== {stamp} === {self.behavior} {self.process} crashed",
                 f"    node: {self.where}",
                 f"    process: {self.process}" + (f" registered as {self.name!r}" if self.name else ""),
                 f"    behavior: {self.behavior}",
                 f"    reason: {self.reason}"]
        if self.last_message:
            lines.append(f"    last message: {self.last_message}")
        if self.parent is not None:
            lines.append(f"    parent: {self.parent}")
        lines.append(f"    queue: {self.queue_len} message(s) left")
        if self.count > 1:
            lines.append(f"    crashes: {self.count} (one report for a run of them)")
        if self.traceback:
            lines.append("    traceback:")
            lines += [f"      {line}" for line in tracebacks.fold(self.traceback.rstrip(), full=full).splitlines()]
        return "\n".join(lines)

    # wire form (plain data the codec carries): a list, so new fields can be appended
    def to_wire(self) -> list[Any]:
        reason = self.reason if isinstance(self.reason, (str, ErrorReason)) else short_repr(self.reason)
        return [self.at, self.node, self.process, self.name, self.behavior, reason, self.last_message,
                self.parent, self.queue_len, self.count]

    @classmethod
    def from_wire(cls, data: Any) -> CrashReport:
        if not isinstance(data, list) or len(data) < 10 or not isinstance(data[2], ProcessRef):
            raise InvalidArgumentError(f"not a crash report: {short_repr(data)}")
        at, node, process, name, behavior, reason, last, parent, queue_len, count = data[:10]
        return cls(float(at), node if isinstance(node, NodeId) else None, process,
                   str(name) if name is not None else None, str(behavior), reason, str(last or ""),
                   parent if isinstance(parent, ProcessRef) else None, int(queue_len), max(1, int(count)))

    def with_count(self, count: int) -> CrashReport:
        return replace(self, count=count)


# ----------------------------------------------------------------------------------- the hook
CrashListener = Callable[[CrashReport], None]
_listeners: weakref.WeakKeyDictionary[Node, list[CrashListener]] = weakref.WeakKeyDictionary()
_QUIET = frozenset({NORMAL, SHUTDOWN, KILLED})


def on_crash(node: Node, listener: CrashListener) -> Callable[[], None]:
    """Call `listener(report)` for every crash on `node`; returns the function that stops it."""
    listeners = _listeners.setdefault(node, [])
    listeners.append(listener)

    def stop() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return stop


def is_crash(proc: Process, reason: ExitReason) -> bool:
    """An abnormal exit of the process's own making (see the module doc)."""
    if type(reason) is str and reason in _QUIET:
        return False
    killed_by = proc._kill_reason
    return killed_by is None or killed_by == MAILBOX_OVERFLOW


def report_crash(node: Node, proc: Process, reason: ExitReason) -> CrashReport | None:
    """Called by the node for every abnormal exit: log, emit and forward a report if it crashed."""
    if not is_crash(proc, reason):
        return None
    crashed_on = proc._crashed_on
    if crashed_on is None:
        last = ""
    elif crashed_on[0] == "init":
        last = f"init({short_repr(crashed_on[1])})"
    else:
        last = f"{crashed_on[0]} {short_repr(crashed_on[1])}"
    report = CrashReport(node.clock.time(), node.id, proc.ref, proc.name, proc.behavior.__name__, reason, last,
                         proc.parent, len(proc.mailbox))
    try:
        log.error("%s", report.text(), extra={"noex_crash_report": report})
    except Exception as exc:  # a broken log handler must not break the exit path
        node.events.report_error("logging a crash report failed", exc)
    if node.running:
        node.events.emit("crash_report", report=report)
    for listener in tuple(_listeners.get(node, ())):
        try:
            listener(report)
        except Exception as exc:
            node.events.report_error("a crash report listener failed", exc)
    return report

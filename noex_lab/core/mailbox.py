"""Optional mailbox bounds: `max_mailbox=N` and what happens to a message that finds it full.

Mailboxes are unbounded by default, as in Erlang. A bound is opt-in per process; the
overflow policy is chosen with it:

- ``"drop_newest"``: the new message is not queued. A call gets `MailboxFullError` at once; a
  cast or send is dropped and counted. A `mailbox_overflow` event reports the drops: the first
  one at once, then at most one event per process per second with the count since the last.
- ``"crash"``: the process is killed with reason ``"mailbox_overflow"`` (at once, like Erlang's
  `max_heap_size` kill: `terminate` does not run), so its links, monitors and supervisor act.

System messages (a `Down`, an `Exit` to a process trapping exits, a stop request) are always
queued: a bound never hides a crash or blocks a shutdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError, MailboxFullError, NodeStoppedError
from .messages import Down, Exit
from .process import CALL, INFO, STOP, Process
from .reasons import MAILBOX_OVERFLOW

if TYPE_CHECKING:
    from ._backend import FutureLike
    from .genserver import GenServer
    from .node import Node
    from .refs import ProcessRef

OVERFLOW_POLICIES = ("drop_newest", "crash")
REPORT_INTERVAL_S = 1.0  # at most one mailbox_overflow event per process per interval


def check_mailbox_options(max_mailbox: Any, overflow: Any) -> None:
    """InvalidArgumentError unless `max_mailbox` is None or an int > 0 and `overflow` a known policy."""
    if max_mailbox is not None and (type(max_mailbox) is not int or max_mailbox <= 0):
        raise InvalidArgumentError(
            f"max_mailbox must be a positive int (how many messages may wait) or None for no bound, "
            f"not {max_mailbox!r}"
        )
    if overflow not in OVERFLOW_POLICIES:
        raise InvalidArgumentError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")


class MailboxBound:
    """The bound of one process's mailbox and its count of refused messages."""

    __slots__ = ("dropped", "max", "policy", "reporting", "unreported")

    def __init__(self, max_mailbox: int, policy: str) -> None:
        self.max = max_mailbox
        self.policy = policy
        self.dropped = 0  # messages refused since the process started
        self.unreported = 0  # ... and not yet counted in a mailbox_overflow event
        self.reporting = False  # a report is due within REPORT_INTERVAL_S

    def refuse(self, proc: Process, reply: FutureLike | None) -> None:
        """A message found `proc`'s mailbox full and was not queued; `reply` is a refused call's."""
        if reply is not None and not reply.done():
            reply.set_exception(MailboxFullError(proc.ref, self.max, self.policy))
        self.dropped += 1
        self.unreported += 1
        if not self.reporting:
            self._report(proc)
        if self.policy == "crash":
            proc.kill(MAILBOX_OVERFLOW)

    def _report(self, proc: Process) -> None:
        """Emit the drops counted so far, and look again in REPORT_INTERVAL_S (rate limit)."""
        if not self.unreported:
            self.reporting = False
            return
        node = proc.node
        node.events.emit(
            "mailbox_overflow", ref=proc.ref, name=proc.name, behavior=proc.behavior.__name__,
            policy=self.policy, max_mailbox=self.max, dropped=self.unreported, dropped_total=self.dropped,
        )
        self.unreported = 0
        self.reporting = True
        try:
            node.backend.call_later(
                REPORT_INTERVAL_S, lambda: self._report(proc),
                lambda fn: node.spawn_task(fn, what="mailbox overflow report"),
            )
        except NodeStoppedError:  # nothing will run later on this node: the next drop reports at once
            self.reporting = False


class BoundedProcess(Process):
    """A process started with `max_mailbox`. Only its `deliver` checks a bound, so an unbounded
    process (the default) pays nothing for the feature on its hot path."""

    __slots__ = ()

    def __init__(self, node: Node, pid: int, ref: ProcessRef, behavior: type[GenServer], bound: MailboxBound) -> None:
        super().__init__(node, pid, ref, behavior)
        self.bound = bound

    def deliver(self, item: tuple[Any, ...]) -> None:
        bound = self.bound
        assert bound is not None
        if len(self.mailbox) >= bound.max and not self._closed:
            tag = item[0]
            if tag != STOP and not (tag == INFO and type(item[1]) in (Down, Exit)):  # system messages get in
                bound.refuse(self, item[2] if tag == CALL else None)
                return
        Process.deliver(self, item)

"""Crash reports across the cluster: a node pushes each of its crash reports to the peers that
subscribed (a notebook's kernel, `noex-lab top`), so a crash on any node reaches them.

Remote operations (the `crashes` service, on every distributed node):

- `crashes.subscribe None` -> the last RECENT crash reports of this node (wire form, see
  `CrashReport.to_wire`); from then on this node sends the subscriber
- `crashes.report report` notifications, one per crash, at most MAX_PER_SECOND a second.
  Beyond that, crashes are counted, and when the second is over the last of them is sent with
  `count` = how many it stands for: a crash loop costs a subscriber a few messages a second,
  never one per crash.
- `crashes.unsubscribe None`. A subscriber that leaves the cluster is dropped.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..core.crash_report import CrashReport, on_crash
from ..core.errors import NoexError
from ..core.node import Node
from ..core.node_id import NodeId
from .attached import distribution_of
from .service import Operation, Service

if TYPE_CHECKING:
    from ..core._backend import Cancellable
    from .routing import RemoteRouter

RECENT = 20  # reports a new subscriber gets at once
MAX_PER_SECOND = 20  # reports forwarded one by one each second (to all subscribers together)
SUBSCRIBE_TIMEOUT_S = 5.0

CrashSink = Callable[[CrashReport], None]


class CrashReports(Service):
    """The crash-report service of one distributed node (both sides: it serves its own reports
    to subscribers, and collects the reports of the peers it subscribed to)."""

    namespace = "crashes"

    def __init__(self, node: Node, router: RemoteRouter) -> None:
        self.node = node
        self.router = router
        self.recent: deque[CrashReport] = deque(maxlen=RECENT)
        self.subscribers: set[NodeId] = set()
        self.sinks: list[CrashSink] = []  # local consumers of the peers' reports
        self._window_start = float("-inf")
        self._sent = 0
        self._held: CrashReport | None = None  # the last crash not sent in this window
        self._held_count = 0
        self._flush: Cancellable | None = None

    def operations(self) -> Mapping[str, Operation]:
        return {"subscribe": self._subscribe, "unsubscribe": self._unsubscribe, "report": self._incoming}

    def start(self) -> None:
        on_crash(self.node, self._local_crash)

    # --------------------------------------------------------------- serving this node's reports
    def _subscribe(self, peer: NodeId, _args: Any) -> list[Any]:
        self.subscribers.add(peer)
        return [r.to_wire() for r in self.recent]

    def _unsubscribe(self, peer: NodeId, _args: Any) -> None:
        self.subscribers.discard(peer)

    def _local_crash(self, report: CrashReport) -> None:
        self.recent.append(report)
        if not self.subscribers:
            return
        now = self.node.clock.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._sent = now, 0
        if self._sent < MAX_PER_SECOND:
            self._sent += 1
            self._send(report)
            return
        self._held = report
        self._held_count += 1
        if self._flush is None:
            delay = max(0.0, self._window_start + 1.0 - now)
            self._flush = self.node.backend.call_later(
                delay, self._send_held, lambda fn: self.node.spawn_task(fn, what="crash report flush"))

    def _send_held(self) -> None:
        self._flush = None
        held, count = self._held, self._held_count
        self._held, self._held_count = None, 0
        if held is not None:
            self._window_start, self._sent = self.node.clock.monotonic(), 1
            self._send(held.with_count(count))

    def _send(self, report: CrashReport) -> None:
        wire = report.to_wire()
        for peer in list(self.subscribers):
            try:
                if not self.router.rpc_cast(peer, "crashes.report", wire):
                    self.subscribers.discard(peer)
            except NoexError as exc:  # (a report that cannot travel: say so once, locally)
                self.node.events.report_error(f"forwarding a crash report to {peer} failed", exc)

    # --------------------------------------------------------------- collecting the peers' reports
    def watch(self, sink: CrashSink) -> Callable[[], None]:
        """Call `sink(report)` for every crash on every peer (current and future) from now on,
        and for the few each peer had before. Returns the function that stops it."""
        first = not self.sinks
        self.sinks.append(sink)
        if first:
            for info in self.node.get_nodes():
                self.peer_joined(info.id)

        def stop() -> None:
            if sink in self.sinks:
                self.sinks.remove(sink)
            if not self.sinks and self.node.running:
                for info in self.node.get_nodes():
                    with contextlib.suppress(NoexError):
                        self.router.rpc_cast(info.id, "crashes.unsubscribe", None)

        return stop

    def peer_joined(self, peer: NodeId) -> None:
        if self.sinks and self.node.running:
            self.node.spawn_task(self._subscribe_to, peer, what=f"subscribing to the crash reports of {peer}")

    async def _subscribe_to(self, peer: NodeId) -> None:
        try:
            backlog = await self.router.rpc(peer, "crashes.subscribe", None, SUBSCRIBE_TIMEOUT_S)
        except NoexError:
            return  # gone again, or a node without crash reports: nothing to collect
        for wire in backlog if isinstance(backlog, list) else []:
            self._incoming(peer, wire)

    def _incoming(self, peer: NodeId, wire: Any) -> None:
        try:  # (called from the connection's reader: never raise into it)
            report = CrashReport.from_wire(wire)
        except (ValueError, TypeError) as exc:
            self.node.events.emit("error", what=f"a malformed crash report from {peer}", error=str(exc))
            return
        for sink in tuple(self.sinks):
            try:
                sink(report)
            except Exception as exc:
                self.node.events.report_error("a crash report sink failed", exc)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        self.subscribers.discard(peer)


def watch_cluster_crashes(node: Node, sink: CrashSink) -> Callable[[], None]:
    """`sink(report)` for every crash on any peer of `node` (see `CrashReports.watch`); `node`'s
    own crashes come from its `crash_report` events (or `noex_lab.core.crash_report.on_crash`)."""
    dist = distribution_of(node)
    service = dist.crash_reports if dist is not None else None
    if service is None:
        raise NoexError(f"node {node.display_name} is not distributed: start it with Cluster.start first")
    return service.watch(sink)

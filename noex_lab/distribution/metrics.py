"""Prometheus metrics of one node (`noex-lab node --metrics-port`, `Cluster.start(metrics_port=...)`).

Nothing on the hot paths changes. The collector reads, when Prometheus scrapes, what the node
keeps anyway: its processes and their mailboxes, each connection's counters, the liveness
thread's view of its peers, the transport's refusal counts. Events (restarts, migrations,
transitions, overflows) are counted by an event-stream subscriber, calls by outcome by a wrapper
around this node's `call`. Round trips are measured by a ping over each link once per heartbeat
interval: heartbeats are one-way datagrams, so they have no round trip of their own.

The sample is taken on the node's event loop (the HTTP server runs in a thread); when the loop
is blocked the scrape still answers, with the previous sample, the current loop lag and
`noex_metrics_stale 1`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import (
    CallError,
    CallTimeoutError,
    ClusterError,
    InvalidArgumentError,
    MissingExtraError,
    NodeNotReachableError,
    NoexError,
    ServerNotRunningError,
)
from ..core.events import EventKind, NodeEvent
from ..core.node import Node
from ..core.node_id import NodeId
from .attached import distribution_of

if TYPE_CHECKING:
    from .cluster import Distribution

log = logging.getLogger(__name__)

SCRAPE_WAIT_S = 1.0  # how long a scrape waits for the loop before answering with the last sample
PING_OP = "node.ping"  # the remote operation every node answers (node_ops.NodeService)

# node events counted, by metric
RESTART_EVENTS: tuple[EventKind, ...] = ("supervisor_restart",)
MIGRATION_EVENTS: tuple[EventKind, ...] = ("child_migrated",)
TRANSITIONS: dict[EventKind, str] = {
    "node_up": "up", "node_down": "down", "node_busy": "busy", "node_available": "available",
}
CALL_OUTCOMES = ("ok", "error", "timeout", "noproc", "unreachable", "other")


@dataclass
class _Peer:
    peer: str
    status: str
    messages_out: int
    messages_in: int
    bytes_out: int
    bytes_in: int
    queued_bytes: int
    congested: bool
    busy_count: int
    loop_lag_s: float | None
    heartbeat_age_s: float | None


@dataclass
class _Sample:
    """Plain data taken on the loop, turned into metrics on the scrape thread."""

    processes: int = 0
    mailbox_max: int = 0
    mailbox_total: int = 0
    peers: list[_Peer] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    down_reasons: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    round_trips: dict[str, float] = field(default_factory=dict)


class NodeMetrics:
    """What one node's metrics endpoint reports; `collect()` is prometheus_client's Collector API."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.events: Counter[str] = Counter()
        self.down_reasons: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.round_trips: dict[NodeId, float] = {}
        self._last = _Sample()
        self._unsubscribe = node.events.subscribe(self._on_event)
        self._count_calls()

    # ------------------------------------------------------------------ sources on the loop
    def _on_event(self, event: NodeEvent) -> None:
        self.events[event.kind] += 1
        if event.kind == "node_down":
            self.down_reasons[str(event.data.get("reason"))] += 1

    def _count_calls(self) -> None:
        """Wrap this node's `call` (GenServer.call lands there) to count outcomes; only a node
        that serves metrics pays for it."""
        node = self.node
        plain = node.call
        calls = self.calls

        async def call(target: Any, msg: Any, timeout: float = 5.0) -> Any:
            outcome = "other"
            try:
                result = await plain(target, msg, timeout)
                outcome = "ok"
                return result
            except CallTimeoutError:
                outcome = "timeout"
                raise
            except CallError:
                outcome = "error"
                raise
            except ServerNotRunningError:
                outcome = "noproc"
                raise
            except NodeNotReachableError:
                outcome = "unreachable"
                raise
            finally:
                calls[outcome] += 1

        node.call = call  # type: ignore[method-assign]

    async def ping_loop(self, dist: Distribution, period_s: float) -> None:
        """Measure the round trip to every member over its link, once per `period_s`."""
        async def ping(peer: NodeId) -> None:
            start = dist.node.clock.perf_counter()
            try:
                await dist.router.rpc(peer, PING_OP, None, period_s)
            except (NodeNotReachableError, CallTimeoutError):
                self.round_trips.pop(peer, None)
                return
            except NoexError:
                pass  # a node without the ping handler still answered: that is a round trip
            self.round_trips[peer] = dist.node.clock.perf_counter() - start

        while not dist.stopping:
            peers = set(dist.membership.peers)
            for gone in set(self.round_trips) - peers:
                del self.round_trips[gone]
            async with anyio.create_task_group() as tg:
                for peer in peers:
                    tg.start_soon(ping, peer)
            await anyio.sleep(period_s)

    def sample(self) -> _Sample:
        """Everything the scrape reports, read on the loop (nothing here may block)."""
        node = self.node
        lengths = [len(p.mailbox) for p in node.processes()]
        sample = _Sample(
            processes=len(lengths), mailbox_max=max(lengths, default=0), mailbox_total=sum(lengths),
            events=dict(self.events), down_reasons=dict(self.down_reasons), calls=dict(self.calls),
            round_trips={str(k): v for k, v in self.round_trips.items()},
        )
        dist = distribution_of(node)
        if dist is None:
            return sample
        sample.rejected = dict(dist.transport.rejected)
        live = {p.peer: p for p in dist.liveness.peers()} if dist.liveness is not None else {}
        members = dist.membership.peers
        now = time.time()  # (as the liveness thread stamps its heartbeats: real time)
        for peer, conn in list(dist.transport.conns.items()):
            info = live.get(peer)
            heard = info is not None and info.heartbeats > 0
            member = members.get(peer)
            sample.peers.append(_Peer(
                peer=str(peer), status=member.status if member is not None else "observer",
                messages_out=conn.sent_messages, messages_in=conn.received_messages,
                bytes_out=conn.sent_bytes, bytes_in=conn.received_bytes,
                queued_bytes=conn.queued_bytes, congested=conn.congested, busy_count=conn.busy_count,
                loop_lag_s=info.loop_lag_ms / 1000.0 if info is not None and heard else None,
                heartbeat_age_s=max(0.0, now - info.last_heartbeat_at) if info is not None and heard else None,
            ))
        return sample

    # ------------------------------------------------------------------ the scrape (HTTP thread)
    def _sample_from_loop(self) -> tuple[_Sample, bool]:
        """A fresh sample taken on the node's loop, or (the last one, True) when the loop does
        not answer within SCRAPE_WAIT_S (it is blocked) or is gone."""
        done = threading.Event()
        box: list[_Sample] = []

        def take() -> None:
            try:
                box.append(self.sample())
            except Exception as exc:  # reported, never lost; the scrape answers with the last sample
                self.node.events.report_error("taking a metrics sample failed", exc)
            finally:
                done.set()

        if self.node.running:
            try:
                self.node.backend.call_soon_threadsafe(take)
            except RuntimeError:  # the loop is closed
                done.set()
            done.wait(SCRAPE_WAIT_S)
        if box:
            self._last = box[0]
            return box[0], False
        return self._last, True

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sample, stale = self._sample_from_loop()
        node = self.node
        dist = distribution_of(node)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        from ..version import __version__

        info = GaugeMetricFamily("noex_node_info", "This node: its id and the noex_lab version.",
                                 labels=["node", "version"])
        info.add_metric([node.display_name, __version__], 1)
        yield info
        yield gauge("noex_metrics_stale", "1 when the event loop did not answer the scrape in time "
                    "(the values are the previous scrape's).", 1 if stale else 0)
        yield gauge("noex_loop_lag_seconds", "Seconds since this node's event loop last turned, "
                    "once its periodic stamp is overdue (0 while it runs freely).",
                    dist.stamp.lag_s() if dist is not None else 0.0)
        yield gauge("noex_processes", "Processes running on this node.", sample.processes)
        yield gauge("noex_mailbox_length_max", "Messages queued in the longest mailbox.", sample.mailbox_max)
        yield gauge("noex_mailbox_length_total", "Messages queued in all mailboxes.", sample.mailbox_total)

        members = GaugeMetricFamily("noex_members", "Connected cluster members by status.", labels=["status"])
        statuses = Counter(p.status for p in sample.peers if p.status != "observer")
        for status in ("up", "busy"):
            members.add_metric([status], statuses.get(status, 0))
        yield members

        per_peer = {
            "noex_peer_messages_sent": ("Messages sent to the peer on the current connection.", "messages_out"),
            "noex_peer_messages_received": ("Messages received from the peer on the current connection.",
                                            "messages_in"),
            "noex_peer_bytes_sent": ("Bytes written to the peer's connection.", "bytes_out"),
            "noex_peer_bytes_received": ("Bytes read from the peer's connection.", "bytes_in"),
            "noex_peer_busy": ("Times the link to the peer became busy (busy_limit_bytes queued: "
                               "senders wait).", "busy_count"),
        }
        for name, (doc, attr) in per_peer.items():
            family = CounterMetricFamily(name, doc, labels=["peer"])
            for peer in sample.peers:
                family.add_metric([peer.peer], getattr(peer, attr))
            yield family
        queued = GaugeMetricFamily("noex_peer_send_queue_bytes", "Bytes queued for the peer.", labels=["peer"])
        congested = GaugeMetricFamily("noex_peer_congested", "1 while the link to the peer is busy.",
                                      labels=["peer"])
        lag = GaugeMetricFamily("noex_peer_loop_lag_seconds", "The peer's loop lag, from its heartbeats.",
                                labels=["peer"])
        age = GaugeMetricFamily("noex_peer_heartbeat_age_seconds", "Seconds since the peer's last heartbeat.",
                                labels=["peer"])
        rtt = GaugeMetricFamily("noex_peer_round_trip_seconds", "Round trip of a ping over the peer's link "
                                "(measured once per heartbeat interval).", labels=["peer"])
        for peer in sample.peers:
            queued.add_metric([peer.peer], peer.queued_bytes)
            congested.add_metric([peer.peer], 1 if peer.congested else 0)
            if peer.loop_lag_s is not None:
                lag.add_metric([peer.peer], peer.loop_lag_s)
            if peer.heartbeat_age_s is not None:
                age.add_metric([peer.peer], peer.heartbeat_age_s)
            if peer.peer in sample.round_trips:
                rtt.add_metric([peer.peer], sample.round_trips[peer.peer])
        yield from (queued, congested, lag, age, rtt)

        calls = CounterMetricFamily("noex_calls", "Calls made from this node (local and remote), by outcome.",
                                    labels=["outcome"])
        for outcome in CALL_OUTCOMES:
            calls.add_metric([outcome], sample.calls.get(outcome, 0))
        yield calls
        events = sample.events
        yield counter("noex_restarts", "Children restarted by supervisors on this node.",
                      sum(events.get(k, 0) for k in RESTART_EVENTS))
        yield counter("noex_migrations", "Children a distributed supervisor here moved off a lost node.",
                      sum(events.get(k, 0) for k in MIGRATION_EVENTS))
        yield counter("noex_supervisor_gave_up", "Supervisors here that exceeded their restart intensity.",
                      events.get("supervisor_gave_up", 0))
        transitions = CounterMetricFamily("noex_node_transitions", "Peer transitions seen by this node.",
                                          labels=["transition"])
        for kind, label in TRANSITIONS.items():
            transitions.add_metric([label], events.get(kind, 0))
        yield transitions
        downs = CounterMetricFamily("noex_node_down", "Peers seen down, by reason.", labels=["reason"])
        for reason in ("connection_closed", "heartbeat_timeout", "graceful_shutdown"):
            downs.add_metric([reason], sample.down_reasons.get(reason, 0))
        yield downs
        yield counter("noex_send_buffer_overflows", "Connections closed because a peer did not read "
                      "max_send_buffer_bytes of queued messages (overload).", events.get("send_buffer_overflow", 0))
        yield counter("noex_errors", "Errors from background work reported to the event stream.",
                      events.get("error", 0))
        refused = CounterMetricFamily("noex_connections_refused", "Handshakes that did not make a connection, by "
                                      "kind.", labels=["kind"])
        for how in ("authentication", "refused_by_peer", "handshake_timeout", "too_many_handshakes"):
            refused.add_metric([how], sample.rejected.get(how, 0))
        yield refused

    def close(self) -> None:
        self._unsubscribe()


class MetricsServer:
    """The HTTP endpoint of one node's metrics (`/metrics`), served by a thread; `close()` stops it."""

    def __init__(self, metrics: NodeMetrics, server: Any, thread: threading.Thread, host: str) -> None:
        self.metrics = metrics
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = int(server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (blocks up to half a second for the server thread)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.metrics.close()


def serve(node: Node, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve `node`'s metrics at http://host:port/metrics until the node stops.

    Needs the `prometheus-client` package (`pip install 'noex-lab[metrics]'`); port 0 picks a
    free port (see `.port`). The endpoint has no authentication: bind it where only your
    Prometheus can reach it."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise MissingExtraError("serving metrics", "prometheus-client", "metrics") from None
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise InvalidArgumentError(f"metrics port must be 0..65535, not {port!r}")
    if not node.running:
        raise ClusterError(f"node {node.display_name} is not running; start it before serving its metrics")
    metrics = NodeMetrics(node)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        metrics.close()
        raise ClusterError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick another "
                           "port (or 0 for a free one)") from exc
    endpoint = MetricsServer(metrics, server, thread, host)
    dist = distribution_of(node)
    if dist is not None:
        period = max(dist.config.heartbeat_interval_ms / 1000.0, 0.2)
        node.spawn_task(metrics.ping_loop, dist, period, what="metrics pings")

    async def stop(_graceful: bool) -> None:
        await anyio.to_thread.run_sync(endpoint.close)

    node.stop_hooks.append(stop)
    log.info("%s: metrics at %s", node.display_name, endpoint.url)
    return endpoint

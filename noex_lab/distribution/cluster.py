"""`Cluster`: make a node distributed (listener, liveness thread, membership, routing).

`Distribution` is the per-node object that wires the transport, the router, membership
and the liveness thread together; `Cluster` is the user-facing facade.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..core.errors import ClusterError, InvalidArgumentError, WaitTimeoutError
from ..core.node import Node, current_node
from ..core.node_id import NodeId, validate_node_name
from ..core.snapshot import NodeSnapshot
from ..core.timeouts import check_timeout
from .code_loading import install_code_loading
from .codec import Codec
from .connection import BUSY_LIMIT_BYTES, MAX_SEND_BUFFER_BYTES, Connection
from .crash_reports import install_crash_reports
from .environment import Environment, Heartbeats
from .faults import Faults
from .global_registry import GlobalNames
from .groups import install_groups
from .handshake import derive_key
from .introspection import install_introspection
from .liveness import LivenessMonitor, LoopStamp, PeerLiveness, run_loop_stamper
from .membership import Membership, NodeInfo
from .multi import install_named
from .protocol import GOODBYE
from .routing import RemoteRouter
from .rpc import install_rpc
from .spawn import handle_spawn, spawn
from .sys_tools import install_sys_tools
from .transport import TLSConfig, Transport
from .user_secret import weak_secret_reason

log = logging.getLogger(__name__)

GOSSIP_PERIOD_S = 1.0
DNS_REFRESH_S = 5.0
BIND_ATTEMPTS = 20


@dataclass(frozen=True)
class ClusterConfig:
    """The options of `Cluster.start` ; `_ms` fields are milliseconds."""

    node_name: str
    host: str = "127.0.0.1"
    port: int = 4369
    seeds: tuple[NodeId, ...] = ()
    dns_seeds: tuple[tuple[str, int], ...] = ()
    cluster_secret: str | bytes | None = None
    heartbeat_interval_ms: int = 5000
    heartbeat_miss_threshold: int = 3
    advertise_host: str | None = None
    tls: TLSConfig | None = None
    busy_threshold_ms: int | None = None
    max_message_bytes: int = 64 * 2**20
    busy_limit_bytes: int = BUSY_LIMIT_BYTES
    max_send_buffer_bytes: int | None = None
    allow_code: bool = False
    allow_code_from: tuple[NodeId, ...] = ()
    insecure: bool = False
    hidden: bool = False
    metrics_port: int | None = None  # serve Prometheus metrics (noex_lab.metrics) on this port
    metrics_host: str | None = None  # ... on this address (default: `host`)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def secret(self) -> bytes | None:
        if self.cluster_secret is None:
            return None
        if isinstance(self.cluster_secret, bytes):
            return self.cluster_secret
        return self.cluster_secret.encode()

    @property
    def send_buffer_bound(self) -> int:
        """The hard bound of one connection's queued bytes: by default 128 MiB, and always
        room for two of the largest messages."""
        if self.max_send_buffer_bytes is not None:
            return self.max_send_buffer_bytes
        return max(MAX_SEND_BUFFER_BYTES, 2 * self.max_message_bytes)

    @property
    def busy_threshold_s(self) -> float:
        ms = self.busy_threshold_ms if self.busy_threshold_ms is not None else 2 * self.heartbeat_interval_ms
        return ms / 1000.0

    def validate(self) -> None:
        try:
            validate_node_name(self.node_name)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise InvalidArgumentError(f"port must be 0..65535, not {self.port!r}")
        if self.heartbeat_interval_ms <= 0 or self.heartbeat_miss_threshold < 1:
            raise InvalidArgumentError("heartbeat_interval_ms must be > 0 and heartbeat_miss_threshold >= 1")
        if self.max_message_bytes < 1024:
            raise InvalidArgumentError("max_message_bytes must be at least 1024")
        if not isinstance(self.busy_limit_bytes, int) or self.busy_limit_bytes < 1024:
            raise InvalidArgumentError(
                f"busy_limit_bytes must be an int of at least 1024, not {self.busy_limit_bytes!r}"
            )
        bound = self.max_send_buffer_bytes
        if bound is not None and (not isinstance(bound, int) or bound < self.busy_limit_bytes + self.max_message_bytes):
            raise InvalidArgumentError(
                f"max_send_buffer_bytes must be an int of at least busy_limit_bytes + max_message_bytes "
                f"({self.busy_limit_bytes + self.max_message_bytes}), not {bound!r}"
            )
        if self.cluster_secret is not None and len(self.cluster_secret) < 8:
            raise InvalidArgumentError("cluster_secret must be at least 8 characters")
        if self.allow_code and self.cluster_secret is None:
            raise InvalidArgumentError("allow_code=True needs a cluster_secret (code only over authenticated links)")
        if self.allow_code_from and not self.allow_code:
            raise InvalidArgumentError("allow_code_from= narrows allow_code=True; pass allow_code=True as well")
        if not is_loopback(self.host) and self.cluster_secret is None and not self.insecure:
            raise ClusterError(
                f"refusing to listen on {self.host} without a cluster_secret: anyone who can reach it could "
                "start processes here. Set cluster_secret=..., or pass insecure=True if you really mean it."
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# node -> the Distribution starting on it, until attached: a concurrent Cluster.start takes a new node
_attaching: weakref.WeakKeyDictionary[Node, Distribution] = weakref.WeakKeyDictionary()


class Distribution:
    """Everything that makes one node part of a cluster."""

    def __init__(self, node: Node, config: ClusterConfig, environment: Environment | None = None) -> None:
        self.node = node
        self.config = config
        self.environment = environment  # None: real sockets and the liveness thread (environment.py)
        self.faults = Faults()
        self.stopping = False
        self.node_id: NodeId = NodeId("pending", "127.0.0.1", 1)
        self.key: bytes | None = None  # derived from the cluster secret once, in start()
        self.codec = Codec(None, max_bytes=config.max_message_bytes)
        self.liveness: Heartbeats | None = None
        self.stamp = LoopStamp()
        self.membership = Membership(self)
        self.transport: Transport
        self.router: RemoteRouter
        self.join_hooks: list[Callable[[NodeId], None]] = []
        self.leave_hooks: list[Callable[[NodeId, str], None]] = []
        self.status = "starting"
        self.global_registry: GlobalNames | None = None
        self.metrics: Any = None  # the MetricsServer when metrics_port was given (noex_lab.metrics)

    # ------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        node = self.node
        if node.distribution is not None or _attaching.setdefault(node, self) is not self:
            raise ClusterError(
                f"node {node.display_name} is already distributed (or being made so); "
                "Cluster.start() again makes a new node"
            )
        try:
            await self._start()
        finally:
            if _attaching.get(node) is self:
                del _attaching[node]

    async def _start(self) -> None:
        config = self.config
        secret = config.secret
        if secret is not None:
            weak = weak_secret_reason(secret)
            if weak is not None:
                log.warning("node %s: the cluster secret is weak (%s): whoever records one handshake can try "
                            "guesses offline. Use a long random secret, e.g. the per-user secret file of "
                            "`noex-lab node`, or python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                            config.node_name, weak)
            # scrypt, once per node (not per connection); in a thread so other nodes' loops keep running
            if self.environment is not None:
                self.key = await self.environment.derive_key(secret)
            else:
                self.key = await anyio.to_thread.run_sync(derive_key, secret)
        udp: socket.socket | None = None
        if self.environment is not None:
            listener, port = await self.environment.listen(config.host, config.port)
        else:
            listener, udp = await self._bind()
            port = udp.getsockname()[1]
        host = config.advertise_host or config.host
        if host in ("0.0.0.0", "::", ""):
            listener_close = listener.aclose()
            await listener_close
            if udp is not None:
                udp.close()
            raise ClusterError("binding a wildcard address needs advertise_host= (the address peers dial)")
        self.node_id = NodeId(config.node_name, host, port).interned()
        self.codec = Codec(self.node_id, max_bytes=config.max_message_bytes)
        node = self.node
        self.transport = Transport(
            node, node_id=self.node_id, incarnation=node.incarnation, key=self.key, codec=self.codec,
            faults=self.faults, dispatch=self._dispatch, max_message_bytes=config.max_message_bytes,
            busy_limit_bytes=config.busy_limit_bytes, max_send_buffer_bytes=config.send_buffer_bound,
            tls=config.tls, on_connected=self.membership.on_connected,
            on_disconnected=self.membership.on_disconnected, hidden=config.hidden,
            heartbeat_ms=config.heartbeat_interval_ms,
            connect=self.environment.connect if self.environment is not None else None,
        )
        self.router = RemoteRouter(node, self.transport)
        self.router.on_membership = self.membership.on_frame  # type: ignore[method-assign]
        self.transport.dispatch = self.router.dispatch
        self.router.rpc_handlers["snapshot"] = lambda _peer, _args: node.snapshot()
        self.router.rpc_handlers["ping"] = lambda _peer, _args: None  # round trips (noex_lab.metrics)
        self.router.rpc_handlers["spawn"] = lambda peer, args: handle_spawn(self, peer, args)
        self.router.rpc_handlers["node.leaving"] = self.membership.on_leaving
        self.introspection = install_introspection(self)  # %noex state/trace/ps/events
        install_crash_reports(self)  # crash reports pushed to subscribers (a notebook, top)
        install_code_loading(self)  # shipped behavior source; refused unless allow_code and a cluster_secret
        install_sys_tools(self)  # Sys.suspend/resume/replace_state/statistics/get_status, %noex upgrade
        self.global_registry = GlobalNames(self)
        install_groups(self)  # process groups (pg): local views, broadcast changes
        install_named(self)  # (name, node) targets, multi_call, abcast
        install_rpc(self)  # functions registered with @remote_function
        backend = node.backend

        def report(kind: str, peer: NodeId, live: PeerLiveness) -> None:
            backend.call_soon_threadsafe(lambda: self.membership.on_liveness(kind, peer, live))

        if self.environment is not None:
            self.liveness = self.environment.heartbeats(
                node_id=self.node_id, incarnation=node.incarnation, secret=self.key,
                interval_s=config.heartbeat_interval_ms / 1000.0, miss_threshold=config.heartbeat_miss_threshold,
                busy_threshold_s=config.busy_threshold_s, process_count=lambda: node.process_count,
                report=lambda kind, peer, live: self.membership.on_liveness(kind, peer, live),
            )
        else:
            self.liveness = LivenessMonitor(
                node_id=self.node_id, incarnation=node.incarnation, secret=self.key,
                interval_s=config.heartbeat_interval_ms / 1000.0, miss_threshold=config.heartbeat_miss_threshold,
                busy_threshold_s=config.busy_threshold_s, stamp=self.stamp,
                process_count=lambda: node.process_count, report=report, faults=self.faults, sock=udp,
            )
        node.set_id(self.node_id)
        node.router = self.router
        node.distribution = self
        node.faults = self.faults
        node.stop_hooks.append(self._on_node_stop)
        node.leaving_hooks.append(self._announce_leaving)
        self.liveness.start()
        if self.environment is None:  # (the stamp is read by the liveness thread only)
            node.spawn_task(run_loop_stamper, self.stamp, what="loop stamper")
        node.spawn_task(self.transport.serve, listener, what="listener")
        node.spawn_task(self._gossip_loop, what="gossip")
        node.spawn_task(self.membership.dial_candidates, what="gossip dials")
        self.membership.seeds = list(config.seeds)
        for seed in config.seeds:
            if seed != self.node_id:
                self.transport.ensure_dialing(seed, self._seed_wanted)
        if config.dns_seeds:
            node.spawn_task(self._dns_seed_loop, what="DNS seeds")
        self.status = "running"
        node.events.emit("cluster_started", node_id=self.node_id, seeds=[str(s) for s in config.seeds])

    async def _bind(self) -> tuple[Any, socket.socket]:
        """Bind the TCP listener and the liveness UDP socket on the same port number."""
        config = self.config
        last_error: OSError | None = None
        for _ in range(BIND_ATTEMPTS if config.port == 0 else 1):
            try:
                listener = await anyio.create_tcp_listener(
                    local_host=config.host, local_port=config.port, backlog=4096, reuse_port=False
                )
            except OSError as exc:
                raise ClusterError(
                    f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; "
                    "pick another port (or port=0 for a free one)"
                ) from exc
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            try:
                udp = LivenessMonitor.bind(config.host, port)
            except OSError as exc:
                last_error = exc
                await listener.aclose()
                continue
            return listener, udp
        raise ClusterError(f"cannot bind the liveness UDP port next to TCP {config.port}: {last_error}")

    async def _dns_seed_loop(self) -> None:
        """Re-resolve `dns:HOST:PORT` seeds periodically; every address is a candidate member
        (how a Kubernetes headless service is used for discovery)."""
        while not self.stopping:
            for host, port in self.config.dns_seeds:
                try:
                    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    log.warning("cannot resolve DNS seed %s:%s: %s", host, port, exc)
                    continue
                known = {(peer.host, peer.port) for peer in self.transport.conns}
                known.add((self.node_id.host, self.node_id.port))
                for address in sorted({(str(info[4][0]), int(info[4][1])) for info in infos}):
                    if address not in known and not self.stopping:
                        await self.transport.dial_address(*address)
            await anyio.sleep(DNS_REFRESH_S)

    def _seed_wanted(self, seed: NodeId) -> bool:
        return not self.stopping and seed not in self.membership.peers

    async def _gossip_loop(self) -> None:
        while not self.stopping:
            await anyio.sleep(GOSSIP_PERIOD_S)
            self.membership.gossip_all()
            for seed in self.membership.seeds:
                if seed != self.node_id and seed not in self.membership.peers and not self.membership.peers:
                    self.transport.ensure_dialing(seed, self._seed_wanted)

    def _announce_leaving(self) -> None:
        """Tell every peer, before any process stops, that this node leaves: the exits of its
        processes follow on the same connections, so peers know why they end ("shutdown", not "noconnection")."""
        self.status = "stopping"
        for peer in list(self.transport.conns):
            self.router.rpc_cast(peer, "node.leaving", None)

    async def _on_node_stop(self, graceful: bool) -> None:
        self.stopping = True
        self.status = "stopping"

        def goodbye(conn: Connection) -> None:
            conn.send([GOODBYE])

        await self.transport.close(graceful, goodbye)
        if self.environment is not None and self.liveness is not None:
            await self.environment.stop_heartbeats(self.liveness)
        elif isinstance(self.liveness, LivenessMonitor):
            await anyio.to_thread.run_sync(self.liveness.stop)
        self.status = "stopped"

    # ------------------------------------------------------------------ frames and hooks
    def _dispatch(self, conn: Connection, m: list[Any]) -> None:
        self.router.dispatch(conn, m)  # replaced by the router's own method once it exists

    def peer_joined(self, peer: NodeId) -> None:
        for hook in list(self.join_hooks):
            try:
                hook(peer)
            except Exception as exc:
                self.node.events.report_error("join hook failed", exc)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        for hook in list(self.leave_hooks):
            try:
                hook(peer, reason)
            except Exception as exc:
                self.node.events.report_error("leave hook failed", exc)

    async def spawn(self, behavior_name: str, node_id: NodeId | str, **options: Any) -> Any:
        """`GenServer.start_remote` lands here (the core does not import this layer)."""
        with self.node.as_default():
            return await spawn(behavior_name, node_id, **options)

    def global_names(self) -> dict[str, Any]:
        return dict(self.global_registry.names) if self.global_registry is not None else {}

    # ------------------------------------------------------------------ queries
    def get_nodes(self) -> list[NodeInfo]:
        return self.membership.nodes()

    async def cluster_snapshot(self, timeout: float) -> list[NodeSnapshot]:
        results: list[NodeSnapshot] = [self.node.snapshot()]
        peers = sorted(self.membership.peers)
        slots: list[NodeSnapshot | None] = [None] * len(peers)

        async def one(i: int, peer: NodeId) -> None:
            try:
                with anyio.fail_after(timeout):
                    slots[i] = await self.router.rpc(peer, "snapshot", None, timeout)
            except Exception as exc:
                slots[i] = NodeSnapshot(node=peer, label=str(peer), taken_at=0.0, processes=[], supervisors=[],
                                        names={}, reachable=False, error=f"{type(exc).__name__}: {exc}")

        async with anyio.create_task_group() as tg:
            for i, peer in enumerate(peers):
                tg.start_soon(one, i, peer)
        results.extend(s for s in slots if s is not None)
        return results


def _parse_seeds(seeds: Sequence[str | NodeId]) -> tuple[tuple[NodeId, ...], tuple[tuple[str, int], ...]]:
    """Split seeds into node ids (`name@host:port`) and DNS seeds (`dns:HOSTNAME:PORT`)."""
    ids: list[NodeId] = []
    dns: list[tuple[str, int]] = []
    for seed in seeds:
        if isinstance(seed, NodeId):
            ids.append(seed)
            continue
        if isinstance(seed, str) and seed.startswith("dns:"):
            host, sep, port = seed[4:].rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidArgumentError(f"bad DNS seed {seed!r}: expected dns:HOSTNAME:PORT")
            dns.append((host, int(port)))
            continue
        try:
            ids.append(NodeId.parse(seed))
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"bad seed {seed!r}: {exc} (or use dns:HOSTNAME:PORT)") from None
    return tuple(ids), tuple(dns)


def _parse_node_ids(ids: Sequence[str | NodeId], what: str) -> tuple[NodeId, ...]:
    try:
        return tuple(i if isinstance(i, NodeId) else NodeId.parse(i) for i in ids)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"bad node id in {what}=: {exc} (expected name@host:port)") from None


def _dist(node: Node) -> Distribution:
    dist = node.distribution
    if not isinstance(dist, Distribution):
        raise ClusterError(f"node {node.display_name} is not distributed; call Cluster.start(...) first")
    return dist


class Cluster:
    """Facade: start the current node's distribution and ask it about the cluster."""

    @staticmethod
    async def start(
        node_name: str, *, host: str = "127.0.0.1", port: int = 4369, seeds: Sequence[str | NodeId] = (),
        cluster_secret: str | bytes | None = None, heartbeat_interval_ms: int = 5000,
        heartbeat_miss_threshold: int = 3, advertise_host: str | None = None,
        tls: TLSConfig | ssl.SSLContext | None = None, busy_threshold_ms: int | None = None,
        max_message_bytes: int = 64 * 2**20, allow_code: bool = False, insecure: bool = False,
        hidden: bool = False, allow_code_from: Sequence[str | NodeId] = (),
        busy_limit_bytes: int = BUSY_LIMIT_BYTES, max_send_buffer_bytes: int | None = None,
        metrics_port: int | None = None, metrics_host: str | None = None,
    ) -> Node:
        """Start a node of the cluster: the implicit node the first time, a new node afterwards.

        `hidden=True` makes an observer (like `noex-lab top`): it connects to every member and
        can ask them anything, but members do not list it, gossip it or place children on it.
        `allow_code_from=[node ids]` narrows `allow_code=True` to code shipped by those nodes.
        `metrics_port` serves Prometheus metrics at http://metrics_host:metrics_port/metrics
        (`metrics_host` defaults to `host`; needs `pip install 'noex-lab[metrics]'`)."""
        seed_ids, dns_seeds = _parse_seeds(seeds)
        code_from = _parse_node_ids(allow_code_from, "allow_code_from")
        if isinstance(tls, ssl.SSLContext):
            raise InvalidArgumentError("tls= takes a TLSConfig(server=..., client=...) or TLSConfig.from_files(...)")
        config = ClusterConfig(
            node_name=node_name, host=host, port=port, seeds=seed_ids, dns_seeds=dns_seeds,
            cluster_secret=cluster_secret,
            heartbeat_interval_ms=heartbeat_interval_ms, heartbeat_miss_threshold=heartbeat_miss_threshold,
            advertise_host=advertise_host, tls=tls, busy_threshold_ms=busy_threshold_ms,
            max_message_bytes=max_message_bytes, allow_code=allow_code, insecure=insecure, hidden=hidden,
            allow_code_from=code_from, busy_limit_bytes=busy_limit_bytes, max_send_buffer_bytes=max_send_buffer_bytes,
            metrics_port=metrics_port, metrics_host=metrics_host,
        )
        config.validate()
        node = current_node()
        if node.distribution is not None or node in _attaching or not node.running:
            node = Node(label=node_name)
        dist = Distribution(node, config)
        _attaching[node] = dist  # claimed before the first await: a concurrent start takes another node
        try:
            await node.start()
            await dist.start()
        finally:
            if _attaching.get(node) is dist:
                del _attaching[node]
        if config.metrics_port is not None:
            from .metrics import serve

            try:
                dist.metrics = serve(node, config.metrics_port, config.metrics_host or config.host)
            except BaseException:
                await node.stop()
                raise
        return node

    @staticmethod
    def get_local_node_id() -> NodeId:
        return _dist(current_node()).node_id

    @staticmethod
    def get_nodes() -> list[NodeInfo]:
        return _dist(current_node()).get_nodes()

    @staticmethod
    def get_status() -> str:
        dist = current_node().distribution
        return "not_started" if dist is None else str(dist.status)

    @staticmethod
    def on_node_up(callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return current_node().on_node_up(callback)

    @staticmethod
    def on_node_down(callback: Callable[[NodeId, str], Any]) -> Callable[[], None]:
        return current_node().on_node_down(callback)

    @staticmethod
    def on_node_busy(callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return current_node().on_node_busy(callback)

    @staticmethod
    async def wait_for_nodes(n: int, *, timeout: float = 10.0, node: Node | None = None) -> list[NodeInfo]:
        """Wait until `node` (the current node by default) is connected to at least `n` peers (itself
        not counted, as in `get_nodes()`), and return them: the awaitable form of a loop polling
        `get_nodes()`. Raises `WaitTimeoutError` naming the peers it has after `timeout` seconds."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError(f"n must be a number of peers >= 0, not {n!r}")
        timeout = check_timeout(timeout)
        host = node or current_node()
        dist = _dist(host)
        return await _wait_until_peers(host, dist, n, timeout)

    @staticmethod
    async def stop() -> None:
        await current_node().stop()

    @staticmethod
    async def drain(peer: NodeId | str | None = None, *, timeout: float | None = None) -> None:
        """`node.drain` of the current node: wait until its connections are no longer busy."""
        await current_node().drain(peer, timeout)

    @staticmethod
    async def snapshot(*, timeout: float = 2.0) -> list[NodeSnapshot]:
        """Every node's snapshot; an unreachable node is marked, never blocks past `timeout`."""
        timeout = check_timeout(timeout)
        node = current_node()
        if node.distribution is None:
            return [node.snapshot()]
        return await _dist(node).cluster_snapshot(timeout)



async def _wait_until_peers(host: Node, dist: Distribution, n: int, timeout: float) -> list[NodeInfo]:
    """Wake on every membership change (with a slow re-check as a safety net) until `n` peers."""
    changed = anyio.Event()

    def wake(*_: Any) -> None:
        changed.set()

    unsubscribe = [host.on_node_up(wake), host.on_node_down(wake)]
    try:
        with anyio.move_on_after(timeout):
            while len(peers := dist.get_nodes()) < n:
                changed = anyio.Event()
                with anyio.move_on_after(0.25):
                    await changed.wait()
            return peers
    finally:
        for stop in unsubscribe:
            stop()
    names = ", ".join(sorted(info.id.name for info in dist.get_nodes())) or "none"
    raise WaitTimeoutError(f"{host.display_name} connected to {n} peer(s)", timeout,
                           f"{len(dist.get_nodes())} peer(s): {names}")

"""`Cluster`: make a node distributed (listener, liveness thread, membership, routing).

`Distribution` is the per-node object that wires the transport, the router, membership
and the liveness thread together; `Cluster` is the user-facing facade.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import socket
import ssl
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import anyio

from ..core.errors import ClusterError, InvalidArgumentError, WaitTimeoutError
from ..core.node import Node, current_node
from ..core.node_id import NodeId, validate_node_name
from ..core.refs import ProcessRef
from ..core.snapshot import NodeSnapshot, check_page
from ..core.timeouts import check_timeout
from .attached import distribution_of, require_distribution
from .code_loading import CodeLoading
from .codec import Codec
from .connection import BUSY_LIMIT_BYTES, MAX_SEND_BUFFER_BYTES, Connection
from .crash_reports import CrashReports
from .distributed_supervisor import SupervisorReplicas
from .environment import Environment, Heartbeats
from .faults import Faults, FaultService
from .global_registry import GlobalNames
from .groups import groups_of
from .handshake import derive_key
from .introspection import Introspection
from .liveness import LivenessMonitor, LoopStamp, PeerLiveness, stamp_period_s
from .membership import Membership, NodeInfo
from .multi import NamedService
from .node_ops import NodeService
from .partition_policy import NoPolicy, PartitionGuard, PartitionPolicy
from .protocol import GOODBYE
from .routing import RemoteRouter
from .rpc import RpcService
from .service import Service, Services, install_services
from .spawn import spawn
from .sys_tools import SysHandlers
from .transport import TLSConfig, Transport
from .user_secret import weak_secret_reason

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger(__name__)

GOSSIP_PERIOD_S = 1.0
STAMP_SLACK_S = 0.05  # a stamp this close before the gossip time does the gossip (timers coalesced)
DNS_REFRESH_S = 5.0
BIND_ATTEMPTS = 20
# The liveness defaults, written once: `ClusterConfig`, the command line, `%noex start` and the nodes
# the lab launches all use these. Durations of the cluster's settings are milliseconds (`_ms`).
HEARTBEAT_INTERVAL_MS = 5000
HEARTBEAT_MISS_THRESHOLD = 3


@dataclass(frozen=True)
class ClusterConfig:
    """The options of `Cluster.start(node_name, **options)`: one field per option, with its default;
    `_ms` fields are milliseconds, `_bytes` fields bytes. `seeds` may hold `dns:HOST:PORT` seeds,
    which `from_options` moves to `dns_seeds`."""

    node_name: str
    host: str = "127.0.0.1"
    port: int = 4369
    seeds: tuple[NodeId, ...] = ()
    dns_seeds: tuple[tuple[str, int], ...] = ()
    cluster_secret: str | bytes | None = None
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    heartbeat_miss_threshold: int = HEARTBEAT_MISS_THRESHOLD
    advertise_host: str | None = None
    tls: TLSConfig | None = None
    busy_threshold_ms: int | None = None
    max_message_bytes: int = 64 * 2**20
    busy_limit_bytes: int = BUSY_LIMIT_BYTES
    max_send_buffer_bytes: int | None = None
    allow_code: bool = False
    allow_fault_injection: bool = False  # peers may set this node's fault rules (remote operation faults.set)
    allow_code_from: tuple[NodeId, ...] = ()
    insecure: bool = False
    hidden: bool = False
    metrics_port: int | None = None  # serve Prometheus metrics (noex_lab.metrics) on this port
    metrics_host: str | None = None  # ... on this address (default: `host`)
    partition_policy: PartitionPolicy = field(default_factory=PartitionPolicy)  # "none": every side runs on
    stable_after_ms: int | None = None  # the takeover window (default: see `stable_after_s`)

    @classmethod
    def from_options(cls, node_name: str, **options: Any) -> ClusterConfig:
        """The checked config of `Cluster.start(node_name, **options)`: seeds and node ids parsed
        from text; an unknown option is an `InvalidArgumentError` naming the closest one."""
        known = [f.name for f in fields(cls) if f.name not in ("node_name", "dns_seeds")]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; the options are {', '.join(known)}"
                raise InvalidArgumentError(f"Cluster.start has no option {name!r}{hint}")
        if "seeds" in options:
            options["seeds"], options["dns_seeds"] = _parse_seeds(options["seeds"])
        if "allow_code_from" in options:
            options["allow_code_from"] = _parse_node_ids(options["allow_code_from"], "allow_code_from")
        if "partition_policy" in options:
            options["partition_policy"] = PartitionPolicy.of(options["partition_policy"])
        if isinstance(options.get("tls"), ssl.SSLContext):
            raise InvalidArgumentError("tls= takes a TLSConfig(server=..., client=...) or TLSConfig.from_files(...)")
        config = cls(node_name=node_name, **options)
        config.validate()
        return config

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

    @property
    def stable_after_s(self) -> float:
        """How long a winning side waits before it takes over a lost member's work: by default
        twice the heartbeat timeout, at least 4 heartbeat intervals (docs/concepts/partitions.md)."""
        ms = self.stable_after_ms
        if ms is None:
            ms = max(2 * self.heartbeat_interval_ms * self.heartbeat_miss_threshold, 4 * self.heartbeat_interval_ms)
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
        if not isinstance(self.partition_policy, PartitionPolicy):
            raise InvalidArgumentError(
                f"partition_policy must be a PartitionPolicy (PartitionPolicy.of(name)), not {self.partition_policy!r}")
        floor = 4 * self.heartbeat_interval_ms
        if self.stable_after_ms is not None and (isinstance(self.stable_after_ms, bool)
                                                 or not isinstance(self.stable_after_ms, int)
                                                 or self.stable_after_ms < floor):
            raise InvalidArgumentError(
                f"stable_after_ms must be an int of at least 4 heartbeat intervals ({floor} ms), not "
                f"{self.stable_after_ms!r}: the losing side must fence before the winning side takes over")
        if self.cluster_secret is not None and len(self.cluster_secret) < 8:
            raise InvalidArgumentError("cluster_secret must be at least 8 characters")
        if self.allow_code and self.cluster_secret is None:
            raise InvalidArgumentError("allow_code=True needs a cluster_secret (code only over authenticated links)")
        if self.allow_fault_injection and self.cluster_secret is None:
            raise InvalidArgumentError("allow_fault_injection=True needs a cluster_secret (faults only from "
                                       "authenticated peers)")
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
        if environment is not None and (node.clock is not environment.clock or node.entropy is not environment.entropy):
            raise InvalidArgumentError("a node distributed over an Environment reads its time and randomness: build "
                                       "it with Node(clock=environment.clock, entropy=environment.entropy)")
        self.faults = Faults(rng=node.entropy.new_random())
        self.stopping = False
        self.node_id: NodeId = NodeId("pending", "127.0.0.1", 1)
        self.key: bytes | None = None  # derived from the cluster secret once, in start()
        self.codec = Codec(None, max_bytes=config.max_message_bytes)
        self.liveness: Heartbeats | None = None
        self.stamp = LoopStamp(stamp_period_s(config.busy_threshold_s), node.clock.monotonic)
        self.membership = Membership(self)
        self.transport: Transport
        self.router: RemoteRouter
        self.services = Services(node)  # built in _start, dependencies first (service.py)
        self.status = "starting"
        # the services other layers and services reach by name (None until _start built them)
        self.introspection: Introspection | None = None
        self.crash_reports: CrashReports | None = None
        self.global_registry: GlobalNames | None = None
        self.partition_guard: PartitionGuard | None = None  # with a partition policy other than "none"
        self.metrics: MetricsServer | None = None  # when metrics_port was given (noex_lab.metrics)
        self.supervisor_replicas: SupervisorReplicas | None = None  # DistributedSupervisor replicas and hand-offs

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
        # the router first: the transport's connections hand it every frame (no trampoline)
        conns: dict[NodeId, Connection] = {}
        self.router = RemoteRouter(node, conns, self.membership.on_frame)
        self.transport = Transport(
            node, node_id=self.node_id, incarnation=node.incarnation, key=self.key, codec=self.codec,
            faults=self.faults, conns=conns, dispatch=self.router.dispatch, max_message_bytes=config.max_message_bytes,
            busy_limit_bytes=config.busy_limit_bytes, max_send_buffer_bytes=config.send_buffer_bound,
            tls=config.tls, on_connected=self.membership.on_connected,
            on_disconnected=self.membership.on_disconnected, hidden=config.hidden,
            heartbeat_ms=config.heartbeat_interval_ms,
            connect=self.environment.connect if self.environment is not None else None,
        )
        self.faults.on_reset = self._reset_links
        # a long cut has slowed the redials down; (through the loop: a test may heal from outside it)
        self.faults.on_heal = lambda: node.backend.call_soon_threadsafe(self.transport.redial_now)
        install_services(self.services, self.router.rpc_handlers, self._build_services())
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
        node.spawn_task(self.transport.serve, listener, what="listener")
        node.spawn_task(self._periodic_loop, what="loop stamp and gossip")
        self.services.start()
        node.spawn_task(self.membership.dial_candidates, what="gossip dials")
        self.membership.seeds = list(config.seeds)
        for seed in config.seeds:
            if seed != self.node_id:
                self.transport.ensure_dialing(seed, self._seed_wanted)
        if config.dns_seeds:
            node.spawn_task(self._dns_seed_loop, what="DNS seeds")
        self.status = "running"
        node.events.emit("cluster_started", node_id=self.node_id, seeds=[str(s) for s in config.seeds])

    def _build_services(self) -> list[Service]:
        """Every service of this node, dependencies first: that is also the order their join and
        leave hooks run in (the partition guard before the global names: their leave hook asks it)."""
        config = self.config
        node = self.node
        self.introspection = Introspection(node, self.router, self.codec)  # %noex state/trace/ps/events
        self.crash_reports = CrashReports(node, self.router)  # crash reports pushed to subscribers (a notebook, top)
        services: list[Service] = [
            NodeService(self, self.membership),  # snapshot, ping, spawn, shutdown, leaving
            FaultService(self.faults, self.node_id, config.allow_fault_injection),
            self.introspection,
            self.crash_reports,
            CodeLoading(self),  # shipped behavior source; refused unless allow_code and a cluster_secret
            SysHandlers(node, self.codec),  # Sys.suspend/resume/replace_state/statistics/get_status, %noex upgrade
        ]
        if config.partition_policy.kind != "none" and not config.hidden:
            self.partition_guard = PartitionGuard(self, config.partition_policy, config.stable_after_s)
            services.append(self.partition_guard)
        else:
            services.append(NoPolicy())  # a peer's reports, unused without a policy
        self.global_registry = GlobalNames(self, self.partition_guard)
        self.router.name_resolvers.append(self.global_registry.names.get)
        groups = groups_of(node)  # (local groups exist before the cluster: attached now)
        groups.attach(self)
        self.supervisor_replicas = SupervisorReplicas(self)  # DistributedSupervisor: replicas, takeover, hand-off
        services += [self.global_registry, groups, NamedService(node), RpcService(node), self.supervisor_replicas]
        return services

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

    async def _periodic_loop(self) -> None:
        """The node's timers in one task, so an idle loop wakes once per stamp period (once a second
        with the defaults): the loop stamp every `stamp.period_s`, and every GOSSIP_PERIOD_S (on
        the first stamp at or after it) a gossip round and, with no peer left, the seeds redialed."""
        monotonic = self.node.clock.monotonic
        next_gossip = monotonic() + GOSSIP_PERIOD_S
        while not self.stopping:
            self.stamp.stamp()
            now = monotonic()
            if now >= next_gossip - STAMP_SLACK_S:
                next_gossip += GOSSIP_PERIOD_S
                if next_gossip <= now:  # fell behind (a blocked loop): no burst of rounds
                    next_gossip = now + GOSSIP_PERIOD_S
                try:  # the stamp must go on whatever happens here: a loop without it looks busy
                    self._gossip_tick()
                except Exception as exc:
                    self.node.events.report_error("gossip round failed", exc)
            await anyio.sleep(self.stamp.period_s)

    def _gossip_tick(self) -> None:
        self.membership.gossip_round()
        for seed in self.membership.seeds:
            if seed != self.node_id and seed not in self.membership.peers and not self.membership.peers:
                self.transport.ensure_dialing(seed, self._seed_wanted)

    def _announce_leaving(self) -> None:
        """Tell every peer, before any process stops, that this node leaves: the exits of its
        processes follow on the same connections, so peers know why they end ("shutdown", not "noconnection")."""
        self.status = "stopping"
        for peer in list(self.transport.conns):
            self.router.rpc_cast(peer, "node.leaving", None)

    def _reset_links(self, peers: list[NodeId]) -> None:
        """A cut in mode "reset": its connections close at once, and both sides see it."""
        for peer in peers:
            conn = self.transport.conns.get(peer)
            if conn is not None:
                conn.close("connection_closed")

    async def _on_node_stop(self, graceful: bool) -> None:
        self.stopping = True
        self.status = "stopping"

        def goodbye(conn: Connection) -> None:
            conn.send([GOODBYE])

        await self.transport.close(graceful, goodbye)
        self.faults.shutdown()  # parked sockets of cut links close now
        if self.environment is not None and self.liveness is not None:
            await self.environment.stop_heartbeats(self.liveness)
        elif isinstance(self.liveness, LivenessMonitor):
            await anyio.to_thread.run_sync(self.liveness.stop)
        self.status = "stopped"

    # ------------------------------------------------------------------ membership hooks
    def peer_joined(self, peer: NodeId) -> None:
        self.services.peer_joined(peer)

    def peer_left(self, peer: NodeId, reason: str) -> None:
        self.services.peer_left(peer, reason)

    # ------------------------------------------------------------------ core.router.ClusterPort
    async def spawn(self, behavior_name: str, node_id: NodeId | str, **options: Any) -> ProcessRef:
        """`GenServer.start_remote` lands here (the core does not import this layer)."""
        with self.node.as_default():
            return await spawn(behavior_name, node_id, **options)

    def global_names(self) -> dict[str, ProcessRef]:
        return dict(self.global_registry.names) if self.global_registry is not None else {}

    def get_nodes(self) -> list[NodeInfo]:
        return self.membership.nodes()

    def on_node_up(self, callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return _subscribe(self.membership.up_callbacks, callback)

    def on_node_down(self, callback: Callable[[NodeId, str], Any]) -> Callable[[], None]:
        return _subscribe(self.membership.down_callbacks, callback)

    def on_node_busy(self, callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return _subscribe(self.membership.busy_callbacks, callback)

    # ------------------------------------------------------------------ queries

    async def cluster_snapshot(self, timeout: float, page: dict[str, Any] | None = None) -> list[NodeSnapshot]:
        """Every node's snapshot (`page`: the `limit`, `offset` and `sort` of `node.snapshot`)."""
        results: list[NodeSnapshot] = [self.node.snapshot(**(page or {}))]
        peers = sorted(self.membership.peers)
        slots: list[NodeSnapshot | None] = [None] * len(peers)

        async def one(i: int, peer: NodeId) -> None:
            try:
                with anyio.fail_after(timeout):
                    slots[i] = await self.router.rpc(peer, "node.snapshot", page, timeout)
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


def _subscribe(callbacks: list[Any], callback: Any) -> Callable[[], None]:
    callbacks.append(callback)

    def unsubscribe() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return unsubscribe


def _dist(node: Node) -> Distribution:
    return require_distribution(node)


class Cluster:
    """Facade: start the current node's distribution and ask it about the cluster."""

    @staticmethod
    async def start(node_name: str, **options: Any) -> Node:
        """Start a node of the cluster: the implicit node the first time, a new node afterwards.

        The options are the fields of `ClusterConfig` (their defaults and units are there): `host`,
        `port`, `seeds` (node ids or `dns:HOST:PORT`), `cluster_secret`, `heartbeat_interval_ms`,
        `heartbeat_miss_threshold`, `advertise_host`, `tls`, `busy_threshold_ms`, `max_message_bytes`,
        `busy_limit_bytes`, `max_send_buffer_bytes`, `allow_code`, `allow_code_from`, `insecure`,
        `hidden`, `metrics_port`, `metrics_host`, `allow_fault_injection`, `partition_policy`,
        `stable_after_ms`.
        `hidden=True` makes an observer (like `noex-lab top`): it connects to every member and
        can ask them anything, but members do not list it, gossip it or place children on it.
        `allow_code_from=[node ids]` narrows `allow_code=True` to code shipped by those nodes.
        `allow_fault_injection=True` lets authenticated peers set this node's fault rules
        (`noex_lab.distribution.faults.FaultControl`, `%noex partition`; needs a `cluster_secret`).
        `metrics_port` serves Prometheus metrics at http://metrics_host:metrics_port/metrics
        (`metrics_host` defaults to `host`; needs `pip install 'noex-lab[metrics]'`).
        `partition_policy` ("none" by default, "keep_majority", `static_quorum(n)`,
        `keep_referee(node)`) decides which side of a partition keeps running; the other side
        fences. The winning side takes over after `stable_after_ms` (docs/concepts/partitions.md)."""
        config = ClusterConfig.from_options(node_name, **options)
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
    def config(node: Node | None = None) -> ClusterConfig:
        """The options the current node (or `node`) was started with; `ClusterError` while it is
        not distributed."""
        return _dist(node or current_node()).config

    @staticmethod
    def get_local_node_id() -> NodeId:
        return _dist(current_node()).node_id

    @staticmethod
    def get_nodes() -> list[NodeInfo]:
        """The current node's `node.get_nodes()`: its connected peers (empty while not distributed)."""
        dist = distribution_of(current_node())
        return [] if dist is None else dist.get_nodes()

    @staticmethod
    def get_status() -> str:
        """The current node's `node.get_status()` ("not_started" while it is not distributed)."""
        return current_node().get_status()

    @staticmethod
    def on_node_up(callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return _dist(current_node()).on_node_up(callback)

    @staticmethod
    def on_node_down(callback: Callable[[NodeId, str], Any]) -> Callable[[], None]:
        return current_node().on_node_down(callback)

    @staticmethod
    def on_node_busy(callback: Callable[[NodeInfo], Any]) -> Callable[[], None]:
        return _dist(current_node()).on_node_busy(callback)

    @staticmethod
    async def wait_for_nodes(n: int, *, timeout: float = 10.0, node: Node | None = None) -> list[NodeInfo]:
        """Wait until `node` (the current node by default) is connected to at least `n` peers (itself
        not counted, as in `get_nodes()`), and return them: the awaitable form of a loop polling
        `get_nodes()`. Under a partition policy, with `n` >= 1, also until the members have
        admitted `node` (a joining node is fenced until then: see docs/concepts/partitions.md).
        Raises `WaitTimeoutError` naming the peers it has after `timeout` seconds."""
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
    async def snapshot(
        *, timeout: float = 2.0, limit: int | None = None, offset: int = 0, sort: str = "pid",
    ) -> list[NodeSnapshot]:
        """Every node's snapshot; an unreachable node is marked, never blocks past `timeout`.
        With `limit`, each lists one page of its processes (see `Node.snapshot`); the summary
        always counts them all."""
        timeout = check_timeout(timeout)
        check_page(limit, offset, sort)
        page: dict[str, Any] | None = None if limit is None and offset == 0 and sort == "pid" else \
            {"limit": limit, "offset": offset, "sort": sort}
        node = current_node()
        if node.distribution is None:
            return [node.snapshot(**(page or {}))]
        return await _dist(node).cluster_snapshot(timeout, page)



async def _wait_until_peers(host: Node, dist: Distribution, n: int, timeout: float) -> list[NodeInfo]:
    """Wake on every membership change (with a slow re-check as a safety net) until `n` peers."""
    changed = anyio.Event()

    def wake(*_: Any) -> None:
        changed.set()

    unsubscribe = [host.on_node_up(wake), host.on_node_down(wake)]
    guard = dist.partition_guard if n > 0 else None
    if guard is not None:  # admission ends the fence a joining node starts with
        unsubscribe.append(guard.subscribe(wake))
    try:
        with anyio.move_on_after(timeout):
            while len(peers := dist.get_nodes()) < n or (guard is not None and not guard.admitted):
                changed = anyio.Event()
                with anyio.move_on_after(0.25):
                    await changed.wait()
            return peers
    finally:
        for stop in unsubscribe:
            stop()
    names = ", ".join(sorted(info.id.name for info in dist.get_nodes())) or "none"
    admission = "" if guard is None or guard.admitted else "; not admitted by the members yet"
    raise WaitTimeoutError(f"{host.display_name} connected to {n} peer(s)", timeout,
                           f"{len(dist.get_nodes())} peer(s): {names}{admission}")

"""Prometheus metrics (noex_lab.metrics): scraped over HTTP on 127.0.0.1, from in-process nodes
and from a `noex-lab node --metrics-port` process (with JSON logs)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from noex_lab import (
    BehaviorRegistry,
    CallError,
    Cluster,
    DistributedSupervisor,
    GenServer,
    Node,
    ServerNotRunningError,
)
from noex_lab.errors import MissingExtraError
from noex_lab.metrics import MetricsServer, serve
from tests.helpers.cluster import NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


class Worker(GenServer):
    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash on request")
        return msg, state


BehaviorRegistry.register("metrics_worker", Worker)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_blocking(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


async def scrape(url: str) -> Samples:
    return await anyio.to_thread.run_sync(scrape_blocking, url)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def endpoint(node: Node) -> MetricsServer:
    server = node.distribution.metrics
    assert isinstance(server, MetricsServer)
    return server


async def test_a_scrape_reports_processes_traffic_calls_transitions_and_migrations() -> None:
    a, b = await start_cluster(2, metrics_port=0)
    url = endpoint(a).url
    assert url.startswith("http://127.0.0.1:")
    with a.as_default():
        ref = await GenServer.start(Worker)
        assert await GenServer.call(ref, "hello") == "hello"
        with pytest.raises(CallError):
            await GenServer.call(ref, "crash")
        with pytest.raises(ServerNotRunningError):
            await GenServer.call(ref, "gone")
        sup = await DistributedSupervisor.start(
            children=[{"id": "w", "behavior_name": "metrics_worker"}],
            node_selector=lambda nodes, _child: b.id if b.id in nodes else a.id)
        [child] = await DistributedSupervisor.which_children(sup)
        assert child.node == b.id
        for i in range(20):
            assert await GenServer.call(child.ref, i) == i
    peer = str(b.id)
    await wait_until(lambda: b.id in endpoint(a).metrics.round_trips, 5.0, "a ping round trip")
    liveness = a.distribution.liveness
    assert liveness is not None
    await wait_until(lambda: any(p.peer == b.id and p.heartbeats > 0 for p in liveness.peers()), 5.0,
                     "a heartbeat from b")  # (the age is only reported once one was heard)
    got = await scrape(url)
    assert value(got, "noex_node_info", node=str(a.id), version=__import__("noex_lab").__version__) == 1
    assert value(got, "noex_metrics_stale") == 0
    assert value(got, "noex_processes") == len(a.processes()) >= 1
    assert value(got, "noex_mailbox_length_max") == 0 and value(got, "noex_mailbox_length_total") == 0
    assert value(got, "noex_members", status="up") == 1
    assert value(got, "noex_calls_total", outcome="ok") >= 21
    assert value(got, "noex_calls_total", outcome="error") == 1
    assert value(got, "noex_calls_total", outcome="noproc") == 1
    assert value(got, "noex_calls_total", outcome="timeout") == 0
    assert value(got, "noex_peer_messages_sent_total", peer=peer) >= 20
    assert value(got, "noex_peer_messages_received_total", peer=peer) >= 20
    assert value(got, "noex_peer_bytes_sent_total", peer=peer) > 100
    assert value(got, "noex_peer_bytes_received_total", peer=peer) > 100
    assert value(got, "noex_peer_congested", peer=peer) == 0
    assert 0 < value(got, "noex_peer_round_trip_seconds", peer=peer) < 1.0
    assert 0 <= value(got, "noex_peer_heartbeat_age_seconds", peer=peer) < 2.0
    assert value(got, "noex_node_transitions_total", transition="up") == 1
    assert value(got, "noex_connections_refused_total", kind="authentication") == 0

    await b.kill()  # its child moves to a
    await wait_until(lambda: any(e.kind == "child_migrated" for e in a.events.recent(200)), 5.0, "the migration")
    got = await scrape(url)
    assert value(got, "noex_node_transitions_total", transition="down") == 1
    assert value(got, "noex_node_down_total", reason="connection_closed") == 1
    assert value(got, "noex_migrations_total") == 1
    assert value(got, "noex_restarts_total") >= 1
    assert value(got, "noex_members", status="up") == 0
    assert not any(name == "noex_peer_bytes_sent_total" for name, _ in got)  # the peer is gone


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_blocked_loop_still_answers_with_the_last_sample_and_its_lag() -> None:
    (a,) = await start_cluster(1)
    server = serve(a, 0)
    assert value(await scrape(server.url), "noex_metrics_stale") == 0
    result: list[Samples] = []
    scraper = threading.Thread(target=lambda: result.append(scrape_blocking(server.url)))
    scraper.start()
    # the node's loop is blocked (deliberately: this join runs on it) until the scrape answers,
    # which it must do without the loop, after SCRAPE_WAIT_S, from the last sample
    scraper.join(10)
    assert not scraper.is_alive()
    got = result[0]
    assert value(got, "noex_metrics_stale") == 1
    assert value(got, "noex_loop_lag_seconds") >= 1.0
    await a.stop()
    assert await wait_until(lambda: not server._thread.is_alive(), 5.0, "the metrics server stopped")


async def test_without_prometheus_client_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    (a,) = await start_cluster(1)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'noex-lab\[metrics\]'"):
        serve(a, 0)
    with pytest.raises(MissingExtraError):
        await Cluster.start("m", port=0, metrics_port=0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_node_process_serves_metrics_and_logs_transitions_as_json(procs: list[NodeProcess]) -> None:
    proc = NodeProcess("metered", "--metrics-port", "0", "--log-format", "json", "--log-level", "info",
                       "--heartbeat-interval-ms", "200")
    procs.append(proc)
    node_id = await proc.started()
    url = (await anyio.to_thread.run_sync(proc.wait_line, "METRICS ")).split()[1]
    me = await Cluster.start("observer", port=0, seeds=[str(node_id)], heartbeat_interval_ms=200)
    await wait_until(lambda: me.get_nodes(), 10.0, "joined")
    await wait_until(lambda: any('"event": "node_up"' in line for line in proc.stderr), 5.0, "the JSON node_up line")
    got = await scrape(url)
    assert value(got, "noex_node_info", node=str(node_id), version=__import__("noex_lab").__version__) == 1
    assert value(got, "noex_members", status="up") == 1
    await me.stop()
    await wait_until(lambda: any('"event": "node_down"' in line for line in proc.stderr), 5.0, "the down line")
    records = [json.loads(line) for line in proc.stderr if line.startswith("{")]
    down = next(r for r in records if r.get("event") == "node_down")
    assert down["level"] == "info" and down["logger"] == "noex_lab.distribution.membership"
    assert down["node"] == str(node_id) and down["peer"] == str(me.id)
    assert down["message"].endswith("down: graceful_shutdown") and down["time"].endswith("+00:00")


"""Configuration as one object: `Cluster.start(node_name, **options)` builds a `ClusterConfig`, the
front ends declare the cluster flags in one option group with its defaults."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from noex_lab import Cluster, ClusterConfig, NodeId
from noex_lab.distribution.cluster import HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD
from noex_lab.errors import InvalidArgumentError
from noex_lab.frontend.options import add_cluster_arguments, cluster_options

PACKAGE = Path(__file__).resolve().parents[2] / "noex_lab"


def test_options_build_a_checked_config() -> None:
    config = ClusterConfig.from_options("a", port=0, seeds=["b@127.0.0.1:1", "dns:seeds.local:4369"],
                                       allow_code=True, cluster_secret="s" * 12, allow_code_from=["c@h:2"])
    assert config.seeds == (NodeId.parse("b@127.0.0.1:1"),) and config.dns_seeds == (("seeds.local", 4369),)
    assert config.allow_code_from == (NodeId.parse("c@h:2"),)
    assert config.heartbeat_interval_ms == HEARTBEAT_INTERVAL_MS


def test_an_unknown_option_names_the_closest_one() -> None:
    with pytest.raises(InvalidArgumentError, match="no option 'heartbeat_ms' \\(did you mean 'heartbeat_interval_ms'"):
        ClusterConfig.from_options("a", heartbeat_ms=100)


def test_the_flags_default_to_the_config_and_map_onto_its_fields() -> None:
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser, port=0)
    options = cluster_options(parser.parse_args([]))
    fields = {f.name: f.default for f in dataclasses.fields(ClusterConfig)}
    assert set(options) <= set(fields)
    assert (options["heartbeat_interval_ms"], options["heartbeat_miss_threshold"]) == (
        HEARTBEAT_INTERVAL_MS, HEARTBEAT_MISS_THRESHOLD) == (fields["heartbeat_interval_ms"],
                                                           fields["heartbeat_miss_threshold"])
    ClusterConfig.from_options("a", **cluster_options(parser.parse_args(["--seed", "b@h:1", "--port", "5"])))


def test_the_liveness_defaults_are_written_once() -> None:
    """No module but cluster.py writes the heartbeat interval's default as a number (the supervisors'
    `within_ms=5000` is another quantity)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("supervisor.py", "distributed_supervisor.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value == HEARTBEAT_INTERVAL_MS:
                found.append(str(path.relative_to(PACKAGE)))
    assert found == ["distribution/cluster.py"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_started_node_tells_its_config(cleanup: None) -> None:
    node = await Cluster.start("configured", port=0, heartbeat_interval_ms=250)
    config = Cluster.config(node)
    assert (config.node_name, config.heartbeat_interval_ms, config.heartbeat_miss_threshold) == (
        "configured", 250, HEARTBEAT_MISS_THRESHOLD)

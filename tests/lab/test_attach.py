"""`%noex attach` / `%noex detach`: the kernel as a hidden observer of a cluster of `noex-lab node`
processes (Erlang's hidden nodes, `noex-lab top`): it sees and asks everything, but the members
never list it, place no child on it, and it registers no global names."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from noex_lab import Cluster, DistributedSupervisor, GenServer, GlobalRegistry, NodeId
from noex_lab.errors import NotPermittedError
from tests.helpers.cluster import NodeProcess, wait_until
from tests.lab.conftest import shutdown_and_reap
from tests.lab.kernel_harness import Kernel

SECRET_ENV = "NOEX_ATTACH_SECRET"
SECRET = "attach test secret 0123456789"
BEHAVIORS = ("--behaviors", "tests.distribution.behaviors_for_tests", "--behaviors", "tests.lab.attach_behaviors")


def _members(names: list[str]) -> list[NodeProcess]:
    procs: list[NodeProcess] = []
    seed: list[str] = []
    try:
        for name in names:
            proc = NodeProcess(name, "--secret-env", SECRET_ENV, *BEHAVIORS, *seed, env={SECRET_ENV: SECRET})
            procs.append(proc)
            proc.id = NodeId.parse(proc.wait_line("NODE ").split()[1])
            seed = seed or ["--seed", str(proc.id)]
        for proc in procs:
            proc.wait_for(lambda line: line.startswith(f"PEERS {len(names) - 1} "), 15.0, "a full mesh")
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs


@pytest.fixture
def members() -> Iterator[list[NodeProcess]]:
    procs = _members(["at1", "at2", "at3"])
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


SUPERVISE = """from noex_lab import DistributedSupervisor, GenServer, RemoteSpawn, current_node
from noex_lab import GlobalRegistry
from noex_lab.errors import NotPermittedError

member = sorted(info.id for info in current_node().get_nodes())[0]
host = await RemoteSpawn.spawn("supervisor_host", member)
sup = await GenServer.call(host, "get")
for i in range(20):
    await DistributedSupervisor.start_child(sup, {"id": f"c{i}", "behavior_name": "echo", "arg": i})
children = await DistributedSupervisor.which_children(sup)
print("me", current_node().id)
print("placed", sorted(ch.node.name for ch in children))
try:
    await GlobalRegistry.register("attached", children[0].ref)
except NotPermittedError as exc:
    print("refused:", exc)
"""


@pytest.mark.timeout(90)
def test_an_observer_sees_the_cluster_and_is_never_a_member(members: list[NodeProcess]) -> None:
    k = Kernel(extra_env={SECRET_ENV: SECRET})
    try:
        k.ok("%load_ext noex_lab")
        seed = members[1].id
        r = k.ok(f"%noex attach {seed} --secret-env {SECRET_ENV} --name watcher", timeout=30)
        assert "as the hidden observer watcher@127.0.0.1:" in r.text and "3 member(s) connected: at1@" in r.text
        observer = re.search(r"watcher@127\.0\.0\.1:\d+", r.text).group(0)  # type: ignore[union-attr]

        out = k.ok(SUPERVISE, timeout=30).text
        placed = re.search(r"placed \[(.*)\]", out).group(1)  # type: ignore[union-attr]
        assert sorted(placed.replace("'", "").split(", ")) == sorted(["at1"] * 7 + ["at2"] * 7 + ["at3"] * 6)
        assert "watcher" not in placed
        assert "refused: " in out and "is a hidden observer: it registers no global names" in out

        watch = k.ok("%noex watch").text
        assert all(f"at{i}@127.0.0.1:" in watch for i in (1, 2, 3)) and "3 peers connected" in watch
        ps = k.ok("%noex ps --all").text
        assert ps.count("processes on at") == 3 and ps.count("Echo") == 20
        assert "this kernel is a hidden observer" in k.execute("%noex local 1", allow_error=True).text

        r = k.ok("%noex detach")
        assert f"detached: {observer} left the cluster (they saw only its connections close)" in r.text
        assert "not attached" in k.execute("%noex detach", allow_error=True).text
        r = k.ok(f"%noex attach {seed} --secret-env {SECRET_ENV} --name second", timeout=30)
        events = k.ok("%noex events 500 --node at1").text
        assert "watcher" not in events  # not even a node_up or node_down: it was never a member
        k.ok("%noex detach")
        for proc in members:  # the members' own account (`--report`): the kernel never joined
            assert proc.alive
            assert not any("watcher" in line or "second" in line for line in proc.history), proc.history
            assert not any(line.startswith("PEERS ") and int(line.split()[1]) > 2 for line in proc.history)
    finally:
        shutdown_and_reap(k)


def test_member_flag_joins_as_a_full_member_with_a_warning(members: list[NodeProcess]) -> None:
    k = Kernel(extra_env={SECRET_ENV: SECRET})
    try:
        k.ok("%load_ext noex_lab")
        r = k.ok(f"%noex attach {members[0].id} --secret-env {SECRET_ENV} --name joined --member", timeout=30)
        assert "attached to the cluster as a full member joined@127.0.0.1:" in r.text and "3 other member(s)" in r.text
        assert "as asked with --member" in r.text
        members[0].wait_for(lambda line: line.startswith("UP joined@"), 10.0, "the member listed the kernel")
        assert "saw graceful_shutdown" in k.ok("%noex detach").text
        members[0].wait_for(lambda line: line.startswith("DOWN joined@") and line.endswith("graceful_shutdown"),
                            10.0, "the kernel's graceful leave")
        r = k.execute(f"%noex attach {members[0].id} --secret-env NOEX_NOT_SET", allow_error=True)
        assert r.ename == "LabError" and "NOEX_NOT_SET (--secret-env) is not set" in r.text
        r = k.execute(f"%noex attach {members[0].id} --timeout 1", allow_error=True, timeout=30)
        # the per-user secret differs: refused at once, with the reason (not a wait for the timeout)
        assert r.ename == "LabError" and "refused this kernel" in r.text and "wrong cluster secret" in r.text
    finally:
        shutdown_and_reap(k)


@pytest.mark.anyio
@pytest.mark.usefixtures("cleanup")
async def test_a_hidden_nodes_distributed_supervisor_places_children_on_members_only() -> None:
    member = await Cluster.start("m1", port=0, cluster_secret=SECRET, heartbeat_interval_ms=200)
    other = await Cluster.start("m2", port=0, seeds=[str(member.id)], cluster_secret=SECRET,
                                heartbeat_interval_ms=200)
    import tests.distribution.behaviors_for_tests  # noqa: F401  (echo)

    hidden = await Cluster.start("obs", port=0, seeds=[str(member.id)], cluster_secret=SECRET, hidden=True,
                                 heartbeat_interval_ms=200)
    await wait_until(lambda: len(hidden.get_nodes()) == 2 and len(other.get_nodes()) == 1, 10.0, "a cluster")
    assert [i.id for i in other.get_nodes()] == [member.id]
    with hidden.as_default():
        sup = await DistributedSupervisor.start(
            children=[{"id": f"c{i}", "behavior_name": "echo", "arg": i} for i in range(6)],
            node_selector="round_robin")
        nodes = sorted(str(ch.node.name) for ch in await DistributedSupervisor.which_children(sup))
        assert nodes == ["m1"] * 3 + ["m2"] * 3
        with pytest.raises(NotPermittedError, match="hidden observer"):
            await GlobalRegistry.register("x", sup)
        assert await GenServer.call((await DistributedSupervisor.which_children(sup))[0].ref, "arg") in range(6)
        await DistributedSupervisor.stop(sup)

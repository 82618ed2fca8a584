"""Supervisor: strategies and their restart order, restart types, intensity, nesting, dynamic children."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import anyio
import pytest

from noex_lab import (
    ChildInfo,
    ChildSpec,
    ErrorReason,
    GenServer,
    InitError,
    ProcessRef,
    Stop,
    Supervisor,
)
from noex_lab.core.node import Node
from noex_lab.errors import InvalidArgumentError, SupervisorError
from noex_lab.introspection import NodeEvent

from ._helpers import Pawn, Sink, exit_reason, watch

pytestmark = pytest.mark.anyio


class Worker(GenServer):
    """arg = (id, log). Logs ("start", id) in init and ("stop", id) when shut down;
    cast "crash" logs ("crash", id) and raises; cast ("exit", reason) logs ("exit", id) and stops."""

    def init(self, arg: tuple[str, Sink]) -> tuple[str, Sink]:
        wid, log = arg
        log.add(("start", wid))
        return arg

    def handle_call(self, msg: Any, state: tuple[str, Sink]) -> Any:
        return state[0], state

    def handle_cast(self, msg: Any, state: tuple[str, Sink]) -> Any:
        wid, log = state
        if msg == "crash":
            log.add(("crash", wid))
            raise RuntimeError(f"{wid} crashed")
        if isinstance(msg, tuple) and msg[0] == "exit":
            log.add(("exit", wid))
            return Stop(msg[1], state)
        return state

    def terminate(self, reason: Any, state: tuple[str, Sink]) -> None:
        wid, log = state
        if reason == "shutdown":
            log.add(("stop", wid))


def spec(wid: str, log: Sink, **options: Any) -> ChildSpec:
    return ChildSpec(id=wid, behavior=Worker, arg=(wid, log), **options)


def started(*ids: str) -> list[tuple[str, str]]:
    return [("start", i) for i in ids]


def stopped(*ids: str) -> list[tuple[str, str]]:
    return [("stop", i) for i in ids]


async def child_refs(sup: Any) -> dict[str, ProcessRef | None]:
    return {c.id: c.ref for c in await Supervisor.which_children(sup)}


def no_errors(node: Node) -> bool:
    return [e for e in node.events.recent(2000) if e.kind == "error"] == []


# ---------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("strategy", "expected", "untouched"),
    [
        ("one_for_one", [("crash", "b"), *started("b")], "acd"),
        ("one_for_all", [("crash", "b"), *stopped("d", "c", "a"), *started("a", "b", "c", "d")], ""),
        ("rest_for_one", [("crash", "b"), *stopped("d", "c"), *started("b", "c", "d")], "a"),
    ],
)
async def test_strategy_restart_order(node: Node, strategy: str, expected: list[Any], untouched: str) -> None:
    log = Sink()
    sup = await Supervisor.start(strategy, [spec(i, log) for i in "abcd"])  # type: ignore[arg-type]
    assert log.items == started("a", "b", "c", "d")
    before = await child_refs(sup)
    GenServer.cast(before["b"], "crash")
    await log.wait_for(4 + len(expected))
    children = await Supervisor.which_children(sup)  # answered after the restart finished
    assert log.items[4:] == expected
    after = {c.id: c.ref for c in children}
    for cid in "abcd":
        if cid in untouched:
            assert after[cid] == before[cid]
        else:
            assert after[cid] != before[cid]
            assert await GenServer.call(after[cid], "id") == cid
    assert [(c.id, c.restarts, c.status) for c in children] == [
        (cid, 0 if cid in untouched else 1, "running") for cid in "abcd"
    ]
    sup_down = await watch(sup)
    await Supervisor.stop(sup)
    assert log.items[4 + len(expected):] == stopped("d", "c", "b", "a")
    assert await exit_reason(sup_down) == "shutdown"
    assert node.snapshot().processes == []
    assert no_errors(node)


async def test_simple_one_for_one(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start("simple_one_for_one", [ChildSpec(id="w", behavior=Worker)])
    assert await Supervisor.count_children(sup) == 0
    refs = [await Supervisor.start_child(sup, (f"w{i}", log)) for i in range(3)]
    assert [await GenServer.call(r, "id") for r in refs] == ["w0", "w1", "w2"]
    infos = await Supervisor.which_children(sup)
    assert [c.ref for c in infos] == refs and len({c.id for c in infos}) == 3
    GenServer.cast(refs[1], "crash")
    await log.wait_for(5)
    infos = await Supervisor.which_children(sup)
    assert log.items[3:] == [("crash", "w1"), *started("w1")]
    assert infos[0].ref == refs[0] and infos[2].ref == refs[2]
    assert infos[1].ref != refs[1] and infos[1].restarts == 1
    # terminating a dynamic child removes it
    await Supervisor.terminate_child(sup, infos[0].id)
    assert await Supervisor.count_children(sup) == 2
    # an explicit spec works too; a plain arg is refused by the other strategies
    extra = await Supervisor.start_child(sup, spec("x", log))
    assert await GenServer.call(extra, "id") == "x"
    other = await Supervisor.start("one_for_one", [])
    with pytest.raises(SupervisorError):
        await Supervisor.start_child(other, ("y", log))
    await Supervisor.stop(sup)
    assert log.items[-3:] == stopped("x", "w2", "w1")


async def test_simple_one_for_one_child_specs_are_the_template_with_their_own_id_and_arg(node: Node) -> None:
    # a child made from the template keeps no spec until one is read: read, it is the template's
    template = ChildSpec(id="w", behavior=Pawn, restart="transient", shutdown=1.0, max_mailbox=10)
    sup = await Supervisor.start("simple_one_for_one", [template])
    refs = [await Supervisor.start_child(sup, arg) for arg in ("a", "b")]
    assert [(c.id, c.ref) for c in await Supervisor.which_children(sup)] == [("w-1", refs[0]), ("w-2", refs[1])]
    proc = node.local_process(sup)
    assert proc is not None
    children = proc.state.children
    assert [c.spec for c in children] == [dataclasses.replace(template, id="w-1", arg="a"),
                                          dataclasses.replace(template, id="w-2", arg="b")]
    assert children[0].spec is children[0].spec
    await Supervisor.terminate_child(sup, "w-2")
    assert [c.id for c in await Supervisor.which_children(sup)] == ["w-1"]
    await Supervisor.stop(sup)


async def test_simple_one_for_one_transient_children_are_removed_after_a_normal_exit(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start(
        "simple_one_for_one", [ChildSpec(id="w", behavior=Worker, restart="transient")]
    )
    a = await Supervisor.start_child(sup, ("a", log))
    b = await Supervisor.start_child(sup, ("b", log))
    a_down, b_down = await watch(a), await watch(b)
    GenServer.cast(a, ("exit", "normal"))
    GenServer.cast(b, "crash")
    await exit_reason(a_down)
    await exit_reason(b_down)
    infos = await Supervisor.which_children(sup)
    assert len(infos) == 1 and infos[0].restarts == 1
    assert await GenServer.call(infos[0].ref, "id") == "b"


# ---------------------------------------------------------------------------- restart types


@pytest.mark.parametrize("how", ["crash", ("exit", "normal"), ("exit", "shutdown")])
async def test_restart_types(node: Node, how: Any) -> None:
    log = Sink()
    sup = await Supervisor.start(
        "one_for_one",
        [spec("perm", log), spec("trans", log, restart="transient"), spec("temp", log, restart="temporary")],
    )
    before = await child_refs(sup)
    downs = {cid: await watch(ref) for cid, ref in before.items() if ref is not None}
    for ref in before.values():
        GenServer.cast(ref, how)
    for down in downs.values():
        await exit_reason(down)
    infos = {c.id: c for c in await Supervisor.which_children(sup)}
    abnormal = how == "crash"
    assert "temp" not in infos  # temporary: never restarted, forgotten
    assert infos["perm"].status == "running" and infos["perm"].restarts == 1  # permanent: always
    assert infos["perm"].ref != before["perm"]
    if abnormal:  # transient: only after an abnormal exit
        assert infos["trans"].status == "running" and infos["trans"].restarts == 1
    else:
        assert infos["trans"].status == "stopped" and infos["trans"].ref is None
        assert infos["trans"].restarts == 0
    assert log.items.count(("start", "perm")) == 2
    assert log.items.count(("start", "trans")) == (2 if abnormal else 1)
    assert log.items.count(("start", "temp")) == 1


# ---------------------------------------------------------------------------- intensity


async def test_intensity_overflow_stops_children_and_exits_with_max_restarts(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start(
        "one_for_one", [spec("a", log), spec("b", log)], max_restarts=2, within_ms=10_000
    )
    sup_down = await watch(sup)
    for crashes in range(1, 3):
        GenServer.cast((await child_refs(sup))["a"], "crash")
        await log.wait_for(2 + 2 * crashes)
    GenServer.cast((await child_refs(sup))["a"], "crash")  # the third restart within the window
    reason = await exit_reason(sup_down)
    assert isinstance(reason, ErrorReason) and reason.exc_type == "MaxRestartsExceededError"
    assert log.items == [
        *started("a", "b"), ("crash", "a"), *started("a"), ("crash", "a"), *started("a"),
        ("crash", "a"), *stopped("b"),
    ]
    assert node.snapshot().processes == []
    assert no_errors(node)  # nothing was swallowed into an unhandled task error


async def test_intensity_uses_a_sliding_window(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start("one_for_one", [spec("a", log)], max_restarts=1, within_ms=300)
    sup_down = await watch(sup)
    GenServer.cast((await child_refs(sup))["a"], "crash")
    await log.wait_for(3)
    await anyio.sleep(0.4)  # let the first restart leave the 300 ms window
    GenServer.cast((await child_refs(sup))["a"], "crash")
    await log.wait_for(5)
    assert (await Supervisor.which_children(sup))[0].restarts == 2
    assert sup_down.items == []
    GenServer.cast((await child_refs(sup))["a"], "crash")  # second restart inside the window
    assert (await exit_reason(sup_down)).exc_type == "MaxRestartsExceededError"


async def test_a_child_failing_init_on_restart_ends_in_max_restarts(node: Node) -> None:
    log = Sink()
    failing = {"on": False}

    class Flaky(Worker):
        def init(self, arg: tuple[str, Sink]) -> tuple[str, Sink]:
            if failing["on"]:
                arg[1].add(("init_failed", arg[0]))
                raise RuntimeError("cannot start")
            return super().init(arg)

    sup = await Supervisor.start(
        "one_for_one", [ChildSpec(id="a", behavior=Flaky, arg=("a", log))], max_restarts=3
    )
    sup_down = await watch(sup)
    failing["on"] = True
    GenServer.cast((await child_refs(sup))["a"], "crash")
    assert (await exit_reason(sup_down)).exc_type == "MaxRestartsExceededError"
    assert log.items == [*started("a"), ("crash", "a"), *[("init_failed", "a")] * 3]


async def test_a_parent_supervisor_sees_a_child_supervisor_give_up(node: Node) -> None:
    log = Sink()
    events = Sink()
    node.events.subscribe(events)
    top = await Supervisor.start(
        "one_for_one",
        [ChildSpec.supervisor("sub", strategy="one_for_one", children=[spec("a", log)], max_restarts=0)],
    )
    sub = (await child_refs(top))["sub"]
    sub_down = await watch(sub)
    GenServer.cast((await child_refs(sub))["a"], "crash")
    reason = await exit_reason(sub_down)
    assert reason.exc_type == "MaxRestartsExceededError"
    await log.wait_for(3)
    [info] = await Supervisor.which_children(top)
    assert info.ref != sub and info.restarts == 1 and info.is_supervisor
    assert log.items == [*started("a"), ("crash", "a"), *started("a")]
    restarts = [e.data for e in events.items if e.kind == "supervisor_restart"]
    assert len(restarts) == 1
    assert restarts[0]["supervisor"] == top and restarts[0]["child"] == "sub"
    assert restarts[0]["reason"] == reason


# ---------------------------------------------------------------------------- nesting


async def test_nested_supervisors_start_and_stop_in_order(node: Node) -> None:
    log = Sink()
    events = Sink()
    node.events.subscribe(events)
    sub_spec = ChildSpec.supervisor("sub", strategy="one_for_all", children=[spec("s1", log), spec("s2", log)])
    top = await Supervisor.start("one_for_one", [spec("w1", log), sub_spec, spec("w2", log)], name="top")
    top_children = await child_refs("top")
    sub = top_children["sub"]
    assert sub is not None
    names: dict[Any, str] = {top: "top", **{r: i for i, r in top_children.items()}}
    names.update({r: i for i, r in (await child_refs(sub)).items()})

    def order(kind: str) -> list[str]:
        return [names[e.data["ref"]] for e in events.items if e.kind == kind]

    assert order("process_started") == ["w1", "s1", "s2", "sub", "w2", "top"]

    # a crash inside the nested supervisor is handled there (one_for_all), the top is untouched
    GenServer.cast((await child_refs(sub))["s1"], "crash")
    await log.wait_for(8)
    assert (await child_refs(sub)).keys() == {"s1", "s2"}
    assert log.items[4:] == [("crash", "s1"), *stopped("s2"), *started("s1", "s2")]
    assert await child_refs(top) == top_children
    names.update({r: i for i, r in (await child_refs(sub)).items()})

    events.items.clear()
    await Supervisor.stop("top")
    # children before parents, each level in reverse start order
    assert order("process_exited") == ["w2", "s2", "s1", "sub", "w1", "top"]
    assert {e.data["reason"] for e in events.items if e.kind == "process_exited"} == {"shutdown"}
    assert log.items[8:] == stopped("w2", "s2", "s1", "w1")
    assert node.snapshot().processes == []


# ---------------------------------------------------------------------------- dynamic children


async def test_dynamic_children(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start("one_for_one", [spec("a", log)])
    a = (await child_refs(sup))["a"]
    b = await Supervisor.start_child(sup, spec("b", log))
    assert await GenServer.call(b, "id") == "b"
    assert await Supervisor.count_children(sup) == 2
    infos = await Supervisor.which_children(sup)
    assert all(isinstance(c, ChildInfo) for c in infos)
    assert [(c.id, c.ref, c.status, c.restarts) for c in infos] == [
        ("a", a, "running", 0), ("b", b, "running", 0)
    ]

    b_down = await watch(b)
    await Supervisor.terminate_child(sup, "b")
    assert await exit_reason(b_down) == "shutdown"
    infos = await Supervisor.which_children(sup)
    assert [(c.id, c.ref, c.status) for c in infos] == [("a", a, "running"), ("b", None, "stopped")]

    b2 = await Supervisor.restart_child(sup, "b")
    assert b2 != b and await GenServer.call(b2, "id") == "b"
    assert (await Supervisor.which_children(sup))[1].restarts == 1

    with pytest.raises(SupervisorError):
        await Supervisor.delete_child(sup, "b")  # still running
    await Supervisor.terminate_child(sup, b2)  # by ref works too
    await Supervisor.delete_child(sup, "b")
    assert await Supervisor.count_children(sup) == 1
    assert log.items == [*started("a", "b"), *stopped("b"), *started("b"), *stopped("b")]
    assert await child_refs(sup) == {"a": a}


async def test_refused_requests_raise_and_leave_the_supervisor_running(node: Node) -> None:
    log = Sink()
    sup = await Supervisor.start("one_for_one", [spec("a", log)])
    a = (await child_refs(sup))["a"]
    sup_down = await watch(sup)
    with pytest.raises(SupervisorError):
        await Supervisor.start_child(sup, spec("a", log))  # duplicate id
    for op in (Supervisor.terminate_child, Supervisor.restart_child, Supervisor.delete_child):
        with pytest.raises(SupervisorError):
            await op(sup, "nope")

    class Broken(GenServer):
        def init(self, arg: Any) -> Any:
            raise ValueError("broken child")

    with pytest.raises(InitError) as info:
        await Supervisor.start_child(sup, ChildSpec(id="broken", behavior=Broken))
    assert "broken child" in str(info.value)
    # the supervisor and its child carry on
    assert await child_refs(sup) == {"a": a}
    assert await GenServer.call(a, "id") == "a"
    assert sup_down.items == []
    assert log.items == started("a")


async def test_start_function_children(node: Node) -> None:
    log = Sink()

    async def start_x() -> ProcessRef:
        return await GenServer.start(Worker, ("x", log))

    sup = await Supervisor.start("one_for_one", [ChildSpec(id="x", start=start_x)])
    x = (await child_refs(sup))["x"]
    GenServer.cast(x, "crash")
    await log.wait_for(3)
    [info] = await Supervisor.which_children(sup)
    assert info.ref != x and info.restarts == 1
    assert log.items == [*started("x"), ("crash", "x"), *started("x")]
    await Supervisor.stop(sup)
    assert log.items[-1] == ("stop", "x")


async def test_a_child_exceeding_its_shutdown_time_is_killed(node: Node) -> None:
    log = Sink()

    class Stubborn(Worker):
        async def terminate(self, reason: Any, state: tuple[str, Sink]) -> None:
            state[1].add(("terminating", state[0]))
            await anyio.sleep_forever()  # stuck: killed or timed out by the runtime

    sup = await Supervisor.start(
        "one_for_one",
        [ChildSpec(id="s", behavior=Stubborn, arg=("s", log), shutdown=0.2), spec("a", log)],
    )
    s = (await child_refs(sup))["s"]
    s_down = await watch(s)
    t0 = anyio.current_time()
    await Supervisor.terminate_child(sup, "s")
    assert anyio.current_time() - t0 < 2
    assert await exit_reason(s_down, timeout=1) == "killed"
    assert log.items[-1] == ("terminating", "s")

    await Supervisor.restart_child(sup, "s")
    t0 = anyio.current_time()
    await Supervisor.stop(sup)
    assert anyio.current_time() - t0 < 2
    assert node.snapshot().processes == []


async def test_supervisor_init_failure_stops_the_children_already_started(node: Node) -> None:
    log = Sink()

    class Broken(GenServer):
        def init(self, arg: Any) -> Any:
            raise ValueError("no")

    with pytest.raises(InitError) as info:
        await Supervisor.start(
            "one_for_one", [spec("a", log), ChildSpec(id="b", behavior=Broken), spec("c", log)]
        )
    assert isinstance(info.value.__cause__, InitError)
    assert log.items == [*started("a"), *stopped("a")]
    assert node.snapshot().processes == []


def test_child_spec_validation() -> None:
    with pytest.raises(InvalidArgumentError):
        ChildSpec(id="", behavior=Pawn)
    with pytest.raises(InvalidArgumentError):
        ChildSpec(id="x", behavior=Pawn, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        ChildSpec(id="x")
    with pytest.raises(InvalidArgumentError):
        ChildSpec(id="x", behavior=int)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        ChildSpec.supervisor("x", strategy="bogus")
    assert ChildSpec.supervisor("x", strategy="one_for_all").is_supervisor


async def test_supervisor_start_validation(node: Node) -> None:
    with pytest.raises(InvalidArgumentError):
        await Supervisor.start("bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await Supervisor.start("one_for_one", [ChildSpec(id="a", behavior=Pawn)] * 2)
    with pytest.raises(InvalidArgumentError):
        await Supervisor.start("simple_one_for_one", [])
    with pytest.raises(InvalidArgumentError):
        await Supervisor.start("one_for_one", [], max_restarts=-1)
    assert node.snapshot().processes == []


# ---------------------------------------------------------------------------- stress


async def test_stress_1000_children_with_random_crashes(node: Node) -> None:
    rng = random.Random(20240607)
    count, rounds, per_round = 1000, 10, 100
    sup = await Supervisor.start(
        "one_for_one", [ChildSpec(id=f"c{i}", behavior=Pawn) for i in range(count)],
        max_restarts=100_000, within_ms=1000, timeout=60,
    )
    restarts = Sink()

    def on_event(event: NodeEvent) -> None:
        if event.kind == "supervisor_restart":
            restarts.add(event)

    node.events.subscribe(on_event)
    sup_down = await watch(sup)
    children = await Supervisor.which_children(sup)
    for round_no in range(1, rounds + 1):
        for child in rng.sample(children, per_round):
            GenServer.cast(child.ref, "crash" if rng.random() < 0.7 else ("stop", "normal"))
        await restarts.wait_for(round_no * per_round, timeout=20)
        children = await Supervisor.which_children(sup)
    total = rounds * per_round
    assert len(restarts.items) == total
    assert sup_down.items == []
    assert len(children) == count
    assert all(c.status == "running" for c in children)
    assert len({c.ref for c in children}) == count
    assert sum(c.restarts for c in children) == total
    for child in children:
        assert await GenServer.call(child.ref, "ping") == "pong"
    assert len(node.snapshot().processes) == count + 1

"""StateMachine (OTP gen_statem): events, transitions and every action (reply, postpone, state,
event and generic timeouts, state enter calls, inserted events), supervision and crashes."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from noex_lab import (
    CallError,
    ChildSpec,
    From,
    GenServer,
    Registry,
    StateMachine,
    Stop,
    Supervisor,
    Sys,
)
from noex_lab.core.node import Node
from noex_lab.distribution.introspection import get_state
from noex_lab.statem import (
    EventTimeout,
    GenericTimeout,
    KeepState,
    MachineState,
    NextEvent,
    Postpone,
    RepeatState,
    Reply,
    StateTimeout,
)
from tests.helpers.waiting import wait_until

from ._helpers import exit_reason, watch

pytestmark = pytest.mark.anyio


class DoorLock(StateMachine):
    """locked --(right code)--> open --(state timeout)--> locked. While open, buttons are
    postponed (handled once locked again); a call "wait_locked" in the open state waits too."""

    state_enter = True

    def init(self, code: str) -> Any:
        return "locked", {"code": code, "entered": "", "opened": 0, "enters": []}

    def handle_event(self, event_type: str, content: Any, state: str, data: dict[str, Any]) -> Any:
        if event_type == "enter":
            enters = [*data["enters"], (content, state)]
            if state == "open":
                return KeepState({**data, "enters": enters}, StateTimeout(data.get("open_for", 0.05), "lock"))
            return KeepState({**data, "enters": enters})
        if event_type == "cast" and content[0] == "button":
            if state == "open":
                return KeepState(actions=[Postpone()])
            entered = data["entered"] + content[1]
            if entered == data["code"]:
                return "open", {**data, "entered": "", "opened": data["opened"] + 1}
            return KeepState({**data, "entered": entered[-len(data["code"]):]})
        if event_type == "state_timeout":
            return "locked", data
        if event_type == "call":
            if content == "state":
                return KeepState(actions=Reply(state))
            if content == "wait_locked":
                return KeepState(actions=Postpone()) if state == "open" else KeepState(actions=Reply("locked"))
            if content == "open_for":
                return KeepState(actions=Reply(data.get("open_for")))
            if content[0] == "open_for":
                return KeepState({**data, "open_for": content[1]}, Reply("ok"))
        if event_type == "info":
            return KeepState({**data, "info": content})
        return KeepState()


async def test_door_lock_transitions_state_timeout_enter_calls_and_postpone(node: Node) -> None:
    door = await GenServer.start(DoorLock, "42", name="door")
    assert await GenServer.call(door, "state") == "locked"
    GenServer.cast(door, ("button", "4"))
    GenServer.cast(door, ("button", "2"))
    assert await GenServer.call(door, "state") == "open"
    t0 = time.monotonic()
    GenServer.cast(door, ("button", "9"))  # postponed while open
    assert await GenServer.call(door, "wait_locked", timeout=5) == "locked"  # answered after the relock
    assert 0.02 < time.monotonic() - t0 < 2.0
    st = await get_state("door")
    assert isinstance(st.state, MachineState) and st.state.state == "locked"
    data = st.state.data
    assert data["opened"] == 1 and data["entered"] == "9"  # the postponed button came after relocking
    assert data["enters"] == [("locked", "locked"), ("locked", "open"), ("open", "locked")]
    GenServer.send(door, "hello")  # plain messages are "info" events
    assert (await get_state("door")).state.data["info"] == "hello"


async def test_a_state_change_cancels_the_state_timeout_and_setting_it_again_restarts_it(node: Node) -> None:
    class Light(StateMachine):
        def init(self) -> Any:
            return "red", [], StateTimeout(30, "change")

        def handle_event(self, event_type: str, content: Any, state: str, data: list[Any]) -> Any:
            if event_type == "state_timeout":
                return state, [*data, ("timeout", state, content)]
            if content == "green":
                return "green", data, Reply("ok")
            if content == "arm":  # same state: setting it again restarts it
                return KeepState(actions=[StateTimeout(content_of(data), "again"), Reply("ok")])
            if content == "cancel":
                return KeepState(actions=[StateTimeout(None), Reply("ok")])
            return KeepState(actions=Reply(data))

    def content_of(data: list[Any]) -> float:
        return 30.0 if not data else 0.05

    light = await GenServer.start(Light)
    assert (await Sys.get_status(light)).details["timeouts"] == "state_timeout"
    assert await GenServer.call(light, "green") == "ok"
    assert (await Sys.get_status(light)).details["timeouts"] == "-"  # red's timeout went with red
    assert await GenServer.call(light, "arm") == "ok"  # 30 s ...
    assert await GenServer.call(light, "cancel") == "ok"
    assert (await Sys.get_status(light)).details["timeouts"] == "-"
    assert await GenServer.call(light, "arm") == "ok"
    await Sys.replace_state(light, lambda ms: MachineState(ms.state, ["armed"]))  # so "arm" sets 0.05 s
    proc = node.local_process(light)
    assert proc is not None
    assert await GenServer.call(light, "arm") == "ok"  # ... restarted with 0.05 s
    await wait_until(lambda: len(proc.state.data) == 2, 2.0, "the restarted state timeout")
    assert await GenServer.call(light, "get") == ["armed", ("timeout", "green", "again")]


async def test_event_timeout_fires_without_events_and_any_event_cancels_it(node: Node) -> None:
    class Idle(StateMachine):
        def init(self) -> Any:
            return "active", 0

        def handle_event(self, event_type: str, content: Any, state: str, data: int) -> Any:
            if event_type == "event_timeout":
                return "idle", data
            if event_type == "call" and content == "state":
                return KeepState(actions=Reply((state, data)))
            if event_type == "cast":  # activity: start (or restart) a 0.15 s inactivity timeout
                return "active", data + 1, EventTimeout(0.15, "idle")
            return KeepState()

    ref = await GenServer.start(Idle)
    for _ in range(5):  # every cast comes well within the timeout: it never fires
        GenServer.cast(ref, "work")
    assert await GenServer.call(ref, "state") == ("active", 5)  # the call itself cancelled it
    GenServer.cast(ref, "work")
    await wait_until(lambda: node.local_process(ref).state.state == "idle", 2.0, "the event timeout")  # type: ignore[union-attr]
    assert await GenServer.call(ref, "state") == ("idle", 6)


async def test_generic_timeouts_are_named_survive_state_changes_and_can_be_cancelled(node: Node) -> None:
    class Timers(StateMachine):
        def init(self) -> Any:
            return "a", [], [GenericTimeout("slow", 0.2), GenericTimeout("fast", 0.05, {"n": 1}),
                             GenericTimeout("never", 0.05)]

        def handle_event(self, event_type: str, content: Any, state: str, data: list[Any]) -> Any:
            if event_type == "timeout":
                return state, [*data, (state, content)]
            if content == "to_b":
                return "b", data, [GenericTimeout("never", None), Reply("ok")]
            return KeepState(actions=Reply(data))

    ref = await GenServer.start(Timers)
    assert await GenServer.call(ref, "to_b") == "ok"  # cancels "never"; "slow" and "fast" keep running
    await wait_until(lambda: len(node.local_process(ref).state.data) == 2, 2.0, "both timeouts")  # type: ignore[union-attr]
    assert await GenServer.call(ref, "get") == [("b", {"n": 1}), ("b", "slow")]  # content defaults to the name
    status = await Sys.get_status(ref)
    assert status.details == {"postponed": "0", "timeouts": "-"}


async def test_next_events_come_first_then_postponed_ones_then_the_mailbox(node: Node) -> None:
    class Order(StateMachine):
        def init(self) -> Any:
            return "waiting", []

        def handle_event(self, event_type: str, content: Any, state: str, data: list[Any]) -> Any:
            data = [*data, (event_type, content)]
            if event_type == "call":
                return KeepState(data, Reply(data))
            if state == "waiting" and content != "go":
                return KeepState(data, Postpone())
            if content == "go":
                return "ready", data, [NextEvent("internal", "first"), NextEvent("internal", "second")]
            return KeepState(data)

    ref = await GenServer.start(Order)
    for msg in ("p1", "p2", "go", "after"):
        GenServer.cast(ref, msg)
    log = await GenServer.call(ref, "log")
    assert log == [
        ("cast", "p1"), ("cast", "p2"), ("cast", "go"),
        ("internal", "first"), ("internal", "second"),  # inserted events first,
        ("cast", "p1"), ("cast", "p2"),  # then the postponed ones, oldest first,
        ("cast", "after"), ("call", "log"),  # then the mailbox
    ]


async def test_deferred_replies_repeat_state_stop_with_reply_and_async_callbacks(node: Node) -> None:
    class Queue(StateMachine):
        state_enter = True

        async def init(self, arg: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return "empty", {"waiting": [], "enters": 0}

        async def handle_event(self, event_type: str, content: Any, state: str, data: dict[str, Any]) -> Any:
            if event_type == "enter":
                return KeepState({**data, "enters": data["enters"] + 1})
            if content == "take":  # answer later: keep the caller
                caller: From = self.caller
                return KeepState({**data, "waiting": [*data["waiting"], caller]})
            if event_type == "cast":
                replies = [Reply(content, to=c) for c in data["waiting"]]
                return "served", {**data, "waiting": []}, replies
            if content == "repeat":
                return RepeatState(actions=Reply(data["enters"]))
            if content == "stop":
                return Stop("normal", data, reply="bye")
            return KeepState()

    ref = await GenServer.start(Queue)
    got: list[Any] = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(lambda: _append(got, GenServer.call(ref, "take")))
        await wait_until(lambda: len(node.local_process(ref).state.data["waiting"]) == 2, 2.0, "two callers")  # type: ignore[union-attr]
        GenServer.cast(ref, "item")
    assert got == ["item", "item"]
    assert await GenServer.call(ref, "repeat") == 2  # init's enter and "served"'s ...
    assert (await get_state(ref)).state.data["enters"] == 3  # ... then the repeated enter call
    down = await watch(ref)
    assert await GenServer.call(ref, "stop") == "bye"
    assert await exit_reason(down) == "normal"


async def _append(out: list[Any], call: Any) -> None:
    out.append(await call)


async def test_a_crash_fails_the_call_and_a_supervisor_restarts_the_machine(node: Node) -> None:
    class Fragile(StateMachine):
        def init(self) -> Any:
            return "ok", None

        def handle_event(self, event_type: str, content: Any, state: str, data: Any) -> Any:
            if content == "boom":
                raise ValueError("boom")
            if content == "bad":
                return "not a result"
            return KeepState(actions=Reply(state))

    sup = await Supervisor.start("one_for_one", [ChildSpec(id="m", behavior=Fragile, name="machine")])
    first = Registry.whereis("machine")
    with pytest.raises(CallError) as err:
        await GenServer.call("machine", "boom")
    assert err.value.exc_type == "ValueError"
    second = await wait_until(lambda: Registry.whereis("machine") not in (None, first) and Registry.whereis("machine"),
                              5.0, "the restart")
    assert await GenServer.call(second, "ping") == "ok"
    with pytest.raises(CallError) as err:
        await GenServer.call(second, "bad")
    assert err.value.exc_type == "BadReturnError" and "KeepState" in err.value.message
    [child] = await Supervisor.which_children(sup)
    assert child.restarts == 2


def test_a_state_machine_receives_messages_only_as_events() -> None:
    with pytest.raises(TypeError, match="handle_event"):
        class Wrong(StateMachine):
            def handle_call(self, msg: Any, state: Any) -> Any:
                return None, state

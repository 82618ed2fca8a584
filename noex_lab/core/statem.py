"""`StateMachine`: OTP's `gen_statem` on the noex_lab process runtime.

A `StateMachine` is a `GenServer` whose calls, casts and plain messages all arrive as
*events* in one callback, `handle_event(event_type, content, state, data)`, which returns the
next state, the new data and *actions* (replies, postponing, timeouts, inserted events). It is
started, supervised, called (from any node), traced and upgraded like any `GenServer`; its
process state is a `MachineState(state, data)` (what `%noex state` shows).

The process loop drives it unchanged: each mailbox message is one external event, and the
events it leads to (events inserted with `NextEvent`, postponed events retried after a state
change, zero-time timeouts) are handled before the next message, as gen_statem does.
See docs/concepts/state-machines.md for the rules, one by one.
"""

from __future__ import annotations

import inspect
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from .errors import BadReturnError, BehaviorDefinitionError, InvalidArgumentError
from .genserver import From, GenServer, init_takes_arg
from .messages import NoReply, Stop
from .refs import TimerRef
from .timeouts import check_timeout

# The event types handle_event receives.
EVENT_TYPES = ("call", "cast", "info", "enter", "state_timeout", "event_timeout", "timeout", "internal")

_KEEP: Any = type("_Keep", (), {"__repr__": lambda self: "<unchanged>"})()
_STATE, _EVENT = ("state_timeout",), ("event_timeout",)


class MachineState(NamedTuple):
    """The process state of a `StateMachine`: its current `state` and its `data`."""

    state: Any
    data: Any


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class KeepState:
    """Stay in the current state (no state change: state timeout kept, postponed events stay
    postponed), with new `data` (default: unchanged) and `actions`."""

    data: Any = _KEEP
    actions: Any = ()


@dataclass(frozen=True, slots=True)
class RepeatState:
    """Like `KeepState`, but the state enter call runs again as if the state had been entered."""

    data: Any = _KEEP
    actions: Any = ()


# ----------------------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Reply:
    """Answer a call: the one being handled (`to=None`), or a `From` kept from an earlier one."""

    value: Any
    to: From | None = None


@dataclass(frozen=True, slots=True)
class Postpone:
    """Keep this event and handle it again after the next state change."""


@dataclass(frozen=True, slots=True)
class StateTimeout:
    """A `state_timeout` event after `seconds` in this state; any state change cancels it.
    `seconds=None` cancels it; setting it again restarts it."""

    seconds: float | None
    content: Any = None


@dataclass(frozen=True, slots=True)
class EventTimeout:
    """An `event_timeout` event if no other event arrives within `seconds` (any event cancels it)."""

    seconds: float | None
    content: Any = None


@dataclass(frozen=True, slots=True)
class GenericTimeout:
    """A named `timeout` event after `seconds`, kept across state changes; setting the same
    `name` again restarts it, `seconds=None` cancels it. `content` defaults to the name."""

    name: Any
    seconds: float | None
    content: Any = _KEEP


@dataclass(frozen=True, slots=True)
class NextEvent:
    """Handle the event (`event_type`, `content`) next, before any message still queued."""

    event_type: str
    content: Any


Action = Reply | Postpone | StateTimeout | EventTimeout | GenericTimeout | NextEvent


@dataclass(frozen=True, slots=True)
class _Fire:
    """A timeout's message to its own process (stale ones, cancelled or replaced, are dropped)."""

    key: tuple[Any, ...]
    token: int
    content: Any

    def __repr__(self) -> str:
        kind = self.key[0] if self.key[0] != "generic" else f"timeout {self.key[1]!r}"
        return f"{kind}({self.content!r})"


Event = tuple[str, Any, "From | None"]


@dataclass
class _Step:
    state: Any
    data: Any
    stop: Stop | None = None
    repeat: bool = False
    postpone: bool = False
    replies: list[Reply] = field(default_factory=list)
    timeouts: list[tuple[tuple[Any, ...], str, float | None, Any]] = field(default_factory=list)
    nexts: list[Event] = field(default_factory=list)


class _Engine:
    """The machine's own queue, postponed events and timers (kept on the server object, so a
    hot upgrade carries them over)."""

    __slots__ = ("current", "postponed", "queue", "timers", "tokens")

    def __init__(self) -> None:
        self.queue: deque[Event] = deque()
        self.postponed: list[Event] = []
        self.timers: dict[tuple[Any, ...], tuple[TimerRef, int]] = {}
        self.tokens = itertools.count(1)
        self.current: Event | None = None


class StateMachine(GenServer):
    """Subclass and define `init(arg) -> (state, data)` (or `(state, data, actions)`) and
    `handle_event(event_type, content, state, data)` returning one of:

    - `(next_state, data)` or `(next_state, data, actions)`,
    - `KeepState(data=..., actions=...)` (data defaults to unchanged), `RepeatState(...)`,
    - `Stop(reason, data)` (`Stop(reason, data, reply=value)` also answers the current call).

    `event_type` is "call", "cast", "info", "enter" (with `state_enter = True`, after each
    state change: content is the previous state), "state_timeout", "event_timeout",
    "timeout" (a `GenericTimeout`) or "internal" (a `NextEvent`). Actions: `Reply`,
    `Postpone`, `StateTimeout`, `EventTimeout`, `GenericTimeout`, `NextEvent`. Either may be
    a plain function or `async def`. Do not define handle_call/cast/info: every message is an
    event. `terminate(reason, state)` and `code_change(old_vsn, state, extra)` get the
    `MachineState`.
    """

    state_enter: ClassVar[bool] = False  # call handle_event("enter", old_state, ...) on state changes
    _noex_sm: _Engine

    def __init_subclass__(cls, **kwargs: Any) -> None:
        for name in ("handle_call", "handle_cast", "handle_info"):
            if name in cls.__dict__:
                raise BehaviorDefinitionError(
                    f"{cls.__name__} is a StateMachine: calls, casts and messages arrive in handle_event "
                    f"(event types 'call', 'cast', 'info'); do not define {name}"
                )
        user_init = cls.__dict__.get("init")
        if user_init is not None and not getattr(user_init, "_noex_statem_init", False):
            cls.init = _wrap_init(user_init)  # type: ignore[method-assign]
        super().__init_subclass__(**kwargs)

    # ------------------------------------------------------------------ user callbacks
    def init(self, arg: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no init; return (state, data) from it")

    def handle_event(self, event_type: str, content: Any, state: Any, data: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} received {event_type} {content!r} in state {state!r} but defines no handle_event"
        )

    # ------------------------------------------------------------------ inside a callback
    @property
    def caller(self) -> From:
        """The caller of the call event being handled (keep it to reply later with `Reply(v, to=...)`)."""
        current = self._engine().current
        if current is None or current[0] != "call" or current[2] is None:
            raise InvalidArgumentError("self.caller is only valid while handling a 'call' event")
        return current[2]

    # ------------------------------------------------------------------ the process loop's side
    async def handle_call(self, msg: Any, state: Any) -> Any:
        proc = self._noex_process
        assert proc.reply_to is not None
        result = await self._external("call", msg, state, From(proc.reply_to, proc.caller))
        return result if type(result) is Stop else NoReply(result)

    async def handle_cast(self, msg: Any, state: Any) -> Any:
        return await self._external("cast", msg, state, None)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is _Fire:
            engine = self._engine()
            entry = engine.timers.get(msg.key)
            if entry is None or entry[1] != msg.token:
                return state  # cancelled or restarted meanwhile: not an event
            del engine.timers[msg.key]
            kind = "timeout" if msg.key[0] == "generic" else msg.key[0]
            return await self._external(kind, msg.content, state, None)
        return await self._external("info", msg, state, None)

    def noex_status(self, state: Any) -> dict[str, str]:
        """What `Sys.get_status` adds for a state machine: postponed events and running timeouts."""
        engine = self._engine()
        timers = [("timeout " + repr(k[1])) if k[0] == "generic" else k[0] for k in engine.timers]
        return {"postponed": str(len(engine.postponed)), "timeouts": ", ".join(timers) or "-"}

    # ------------------------------------------------------------------ the engine
    def _engine(self) -> _Engine:
        engine = self.__dict__.get("_noex_sm")
        if engine is None:
            engine = self._noex_sm = _Engine()
        return engine

    async def _start(self, result: Any) -> Any:
        """After the user's init: the enter call, init's actions and inserted events."""
        if type(result) is Stop:
            return result
        if not (type(result) is tuple and len(result) in (2, 3)):
            raise BadReturnError(
                f"{type(self).__name__}.init returned {result!r}; return (state, data) or (state, data, actions)"
            )
        state, data = result[0], result[1]
        engine = self._engine()
        step = _Step(state, data)
        self._actions(step, result[2] if len(result) == 3 else (), state, enter=False, init=True)
        if self.state_enter:
            stop = await self._enter(step, state, state)
            if stop is not None:
                return stop
        engine.queue.extend(step.nexts)
        self._set_timeouts(engine, step.timeouts)
        return await self._drain(engine, step.state, step.data)

    async def _external(self, event_type: str, content: Any, state: Any, from_: From | None) -> Any:
        engine = self._engine()
        engine.queue.append((event_type, content, from_))
        ms_state, ms_data = state
        return await self._drain(engine, ms_state, ms_data)

    async def _drain(self, engine: _Engine, state: Any, data: Any) -> Any:
        """Handle queued events until none is left; a MachineState, or a Stop."""
        queue = engine.queue
        try:
            while queue:
                event = queue.popleft()
                self._cancel(engine, _EVENT)  # any event cancels the event timeout
                engine.current = event
                result = self.handle_event(event[0], event[1], state, data)
                if inspect.isawaitable(result):
                    result = await result
                step = self._parse(result, state, data, enter=False)
                if step.stop is not None:
                    return self._stop(step.stop, state, data)
                if step.postpone:
                    engine.postponed.append(event)
                old_state = state
                changed = step.state != state
                retry: list[Event] = []
                if changed:
                    self._cancel(engine, _STATE)
                    retry, engine.postponed = engine.postponed, []
                if (changed or step.repeat) and self.state_enter:
                    engine.current = None
                    stop = await self._enter(step, old_state, step.state)
                    if stop is not None:
                        return self._stop(stop, step.state, step.data)
                state, data = step.state, step.data
                queue.extendleft(reversed(step.nexts + retry))
                self._set_timeouts(engine, step.timeouts)
        finally:
            engine.current = None
        return MachineState(state, data)

    async def _enter(self, step: _Step, old_state: Any, state: Any) -> Stop | None:
        result = self.handle_event("enter", old_state, state, step.data)
        if inspect.isawaitable(result):
            result = await result
        entered = self._parse(result, state, step.data, enter=True)
        if entered.stop is not None:
            return entered.stop
        step.data = entered.data
        step.timeouts.extend(entered.timeouts)
        return None

    def _stop(self, stop: Stop, state: Any, data: Any) -> Stop:
        """A Stop for the process loop: its reply goes to the current event's caller here."""
        engine = self._engine()
        if stop.has_reply:
            current = engine.current
            if current is None or current[2] is None:
                raise BadReturnError(f"{type(self).__name__}: Stop(..., reply=) outside a 'call' event")
            GenServer.reply(current[2], stop.reply)
        engine.queue.clear()
        return Stop(stop.reason, MachineState(state, data))

    def _parse(self, result: Any, state: Any, data: Any, *, enter: bool) -> _Step:
        name = type(self).__name__
        actions: Any = ()
        if type(result) is tuple and len(result) in (2, 3):
            step = _Step(result[0], result[1])
            actions = result[2] if len(result) == 3 else ()
            if enter and step.state != state:
                raise BadReturnError(
                    f"{name}: a state enter call may not change the state ({state!r} -> {step.state!r}); "
                    "insert a NextEvent from the transition instead"
                )
        elif type(result) is KeepState or type(result) is RepeatState:
            step = _Step(state, data if result.data is _KEEP else result.data, repeat=type(result) is RepeatState)
            actions = result.actions
        elif type(result) is Stop:
            return _Step(state, result.state, stop=result)
        else:
            what = "the enter call" if enter else "handle_event"
            raise BadReturnError(
                f"{name}: {what} returned {result!r}; return (next_state, data[, actions]), KeepState(...), "
                "RepeatState(...) or Stop(reason, data)"
            )
        self._actions(step, actions, state, enter=enter, init=False)
        return step

    def _actions(self, step: _Step, actions: Any, state: Any, *, enter: bool, init: bool) -> None:
        name = type(self).__name__
        if not isinstance(actions, (list, tuple)):
            actions = (actions,)
        for action in actions:
            kind = type(action)
            if kind is Reply:
                if init:
                    raise BadReturnError(f"{name}.init: Reply has nobody to answer")
                to = action.to if action.to is not None else self._current_caller(enter)
                GenServer.reply(to, action.value)
            elif kind is Postpone:
                if enter or init:
                    raise BadReturnError(f"{name}: Postpone is only valid when handling an event")
                step.postpone = True
            elif kind is StateTimeout:
                step.timeouts.append((_STATE, "state_timeout", action.seconds, action.content))
            elif kind is EventTimeout:
                step.timeouts.append((_EVENT, "event_timeout", action.seconds, action.content))
            elif kind is GenericTimeout:
                content = action.name if action.content is _KEEP else action.content
                step.timeouts.append((("generic", action.name), "timeout", action.seconds, content))
            elif kind is NextEvent:
                if enter:
                    raise BadReturnError(f"{name}: a state enter call may not insert events (NextEvent)")
                if not isinstance(action.event_type, str) or action.event_type in ("call", "enter"):
                    raise BadReturnError(
                        f"{name}: NextEvent type must be a str other than 'call' and 'enter', not {action.event_type!r}"
                    )
                step.nexts.append((action.event_type, action.content, None))
            else:
                raise BadReturnError(
                    f"{name}: {action!r} is not an action (Reply, Postpone, StateTimeout, EventTimeout, "
                    "GenericTimeout, NextEvent)"
                )

    def _current_caller(self, enter: bool) -> From:
        current = self._engine().current
        if enter or current is None or current[0] != "call" or current[2] is None:
            raise BadReturnError(
                f"{type(self).__name__}: Reply(value) without to= outside a 'call' event; keep self.caller "
                "and pass it as to="
            )
        return current[2]

    # ------------------------------------------------------------------ timeouts
    def _cancel(self, engine: _Engine, key: tuple[Any, ...]) -> None:
        entry = engine.timers.pop(key, None)
        if entry is not None:
            self.node.cancel_timer(entry[0])

    def _set_timeouts(self, engine: _Engine, timeouts: list[tuple[tuple[Any, ...], str, float | None, Any]]) -> None:
        for key, kind, seconds, content in timeouts:
            self._cancel(engine, key)
            if seconds is None:
                continue
            seconds = check_timeout(seconds, kind, allow_zero=True)
            if key is _EVENT and engine.queue:
                continue  # an event is already waiting: it would cancel the timeout at once
            if seconds == 0:
                if key is _EVENT and self._noex_process.mailbox:
                    continue
                engine.queue.append((kind, content, None))  # before any message still queued
                continue
            token = next(engine.tokens)
            timer = self.node.send_after(self.ref, _Fire(key, token, content), seconds)
            engine.timers[key] = (timer, token)


def _wrap_init(user_init: Any) -> Any:
    """The process runs this init: the user's, then the machine's start (enter call, actions)."""
    takes_arg = init_takes_arg(user_init)

    async def init(self: StateMachine, arg: Any) -> Any:
        result = user_init(self, arg) if takes_arg else user_init(self)
        if inspect.isawaitable(result):
            result = await result
        return await self._start(result)

    init._noex_statem_init = True  # type: ignore[attr-defined]
    init.__doc__ = user_init.__doc__  # (no __wrapped__: the process must see that this init takes arg)
    return init


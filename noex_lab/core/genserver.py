"""`GenServer`: the behavior base class and the facade to start, call, cast and stop processes."""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ._backend import FutureLike
from .errors import InvalidArgumentError
from .named import MultiCallResult, abcast, multi_call
from .node import Target, current_node
from .node_id import NodeId
from .process import CAST, INFO
from .reasons import NORMAL, ExitReason
from .refs import ProcessRef, TimerRef

if TYPE_CHECKING:
    from .node import Node
    from .process import Process


@dataclass(frozen=True, slots=True)
class From:
    """Who is waiting for a reply to the current call; pass to `GenServer.reply` to answer later."""

    reply_to: FutureLike
    caller: ProcessRef | None

    def __repr__(self) -> str:
        return f"From({self.caller})"


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


def init_takes_arg(fn: Any) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2  # self + arg


class GenServer:
    """Subclass and define the callbacks your process needs; every one is optional.

    Each callback may be a plain function or `async def`, and runs inside the process, one
    message at a time. An exception in any of them crashes the process (let it crash): callers
    get `CallError`, links and monitors fire, and its supervisor decides what happens next.

    Callbacks:

    - `init(self, arg)` (or `init(self)`): once, when the process starts (`GenServer.start` waits
      for it). Returns the first state (default: `arg`).
    - `handle_call(self, msg, state)`: for each `GenServer.call` (`self.caller` is the caller).
      Returns `(reply, new_state)`; `NoReply(new_state)` to answer later with
      `GenServer.reply(caller, value)`; or `Stop(reason, new_state, reply=value)`.
    - `handle_cast(self, msg, state)`: for each `GenServer.cast`. Returns the new state, or
      `Stop(reason, new_state)`.
    - `handle_info(self, msg, state)`: for every other message (`send`, timers, a monitor's
      `Down`, `Exit` when `trap_exit = True`). Returns the new state, or `Stop(reason, new_state)`
      (default: ignore the message).
    - `terminate(self, reason, state)`: once, on an orderly exit (after `Stop`, `GenServer.stop`,
      a crash in a callback, a shutdown by its supervisor or node); not when an exit signal kills
      the process, nor on `node.kill()`. Its result is ignored; an exception in it replaces the
      exit reason. Not defined here: define it only if there is something to clean up.
    - `code_change(self, old_vsn, state, extra)`: in a hot upgrade (a re-run `%%noex behavior`
      cell, `BehaviorRegistry.upgrade`), on the new code, before its next message: returns the
      state migrated from version `old_vsn` (the class attribute `vsn` names versions). If it
      raises, the process keeps its old code and state. Not defined: the state is kept as it is.

    Class attribute `trap_exit = True` turns exit signals of linked processes into `Exit` messages
    for `handle_info` instead of ending the process.
    """

    trap_exit: ClassVar[bool] = False
    vsn: ClassVar[Any] = None  # names this version of the code (hot upgrades: `code_change` gets the old one)
    _noex_init_async: ClassVar[bool] = False
    _noex_init_takes_arg: ClassVar[bool] = True
    _noex_call_async: ClassVar[bool] = False
    _noex_cast_async: ClassVar[bool] = False
    _noex_info_async: ClassVar[bool] = False
    _noex_process: Process

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._noex_init_async = _is_async(cls.init)
        cls._noex_init_takes_arg = init_takes_arg(cls.init)
        cls._noex_call_async = _is_async(cls.handle_call)
        cls._noex_cast_async = _is_async(cls.handle_cast)
        cls._noex_info_async = _is_async(cls.handle_info)

    # ------------------------------------------------------------------ default callbacks
    def init(self, arg: Any) -> Any:
        """Return the initial state (default: `arg`). May be `init(self)` when the process takes no
        argument. An exception here fails `GenServer.start` with `InitError`."""
        return arg

    def handle_call(self, msg: Any, state: Any) -> Any:
        """Answer a `GenServer.call`: return `(reply, new_state)`, `NoReply(new_state)` (answer later
        with `GenServer.reply(self.caller, value)`) or `Stop(reason, new_state, reply=value)`.
        Default: crash with NotImplementedError (a call nobody handles is a bug)."""
        raise NotImplementedError(f"{type(self).__name__} received call {msg!r} but defines no handle_call")

    def handle_cast(self, msg: Any, state: Any) -> Any:
        """Handle a `GenServer.cast` (nobody waits for it): return the new state, or
        `Stop(reason, new_state)`. Default: crash with NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} received cast {msg!r} but defines no handle_cast")

    def handle_info(self, msg: Any, state: Any) -> Any:
        """Handle any other message (`send`, a timer, a monitor's `Down`, an `Exit` when `trap_exit`):
        return the new state, or `Stop(reason, new_state)`. Default: ignore it (OTP only logs it)."""
        return state

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Hot upgrade: the new code migrates the state of a process that ran version `old_vsn`
        (the old class's `vsn`); return the new state (default: unchanged). Raising keeps the
        process on its old code. May be `async def`."""
        return state

    # ------------------------------------------------------------------ inside a callback
    @property
    def ref(self) -> ProcessRef:
        """This process's own `ProcessRef`."""
        return self._noex_process.ref

    @property
    def node(self) -> Node:
        """The node hosting this process."""
        return self._noex_process.node

    @property
    def caller(self) -> From:
        """The pending caller; valid during `handle_call` (keep it to reply later)."""
        proc = self._noex_process
        if proc.reply_to is None:
            raise InvalidArgumentError("self.caller is only valid during handle_call")
        return From(proc.reply_to, proc.caller)

    # ------------------------------------------------------------------ facade
    @staticmethod
    async def start(
        behavior: type[GenServer], arg: Any = None, *, name: str | None = None, timeout: float = 5.0,
        max_mailbox: int | None = None, overflow: str = "drop_newest",
    ) -> ProcessRef:
        """Start a process on the current node; returns its ref once `init` succeeded.

        `max_mailbox=N` bounds its mailbox (default: unbounded); `overflow` is what a message
        finding it full does: "drop_newest" (dropped; a call gets `MailboxFullError`) or "crash"
        (the process exits with reason "mailbox_overflow")."""
        return await current_node().spawn(
            behavior, arg, name=name, timeout=timeout, max_mailbox=max_mailbox, overflow=overflow
        )

    @staticmethod
    async def start_remote(
        behavior_name: str, node_id: NodeId | str, *, arg: Any = None, name: str | None = None,
        registration: str | None = None, timeout: float = 10.0, max_mailbox: int | None = None,
        overflow: str = "drop_newest",
    ) -> ProcessRef:
        """Start a registered behavior on another node (same as `RemoteSpawn.spawn`: `name=` without
        `registration=` registers the name on the target node)."""
        if registration is None:
            registration = "local" if name else "none"
        node = current_node()
        cluster = node.distribution
        if cluster is None:
            from .errors import NodeNotReachableError

            raise NodeNotReachableError(node_id, "this node is not distributed (call Cluster.start first)")
        result: ProcessRef = await cluster.spawn(
            behavior_name, node_id, arg=arg, name=name, registration=registration, timeout=timeout,
            max_mailbox=max_mailbox, overflow=overflow,
        )
        return result

    @staticmethod
    def call(target: Target, msg: Any, *, timeout: float = 5.0) -> Coroutine[Any, Any, Any]:
        """Send `msg` to `handle_call` and wait for the reply (local or remote target):
        `reply = await GenServer.call(target, msg)`.

        A target is a `ProcessRef`, a registered name, or `(name, node_id)`: the process
        registered as `name` in the local `Registry` of that node (OTP `{Name, Node}`).
        (It returns the call's coroutine itself rather than being one that awaits it: one
        coroutine less per call; nothing is sent until it is awaited.)"""
        return current_node().call(target, msg, timeout)

    @staticmethod
    async def multi_call(
        name: str, msg: Any, *, nodes: Iterable[NodeId | str] | None = None, timeout: float = 5.0,
    ) -> MultiCallResult:
        """Call the process registered locally as `name` on each node of `nodes` (None: this
        node and every connected peer) at once, like OTP's `gen_server:multi_call`.

        `replies, bad_nodes = await GenServer.multi_call(...)`: the reply of each node that
        answered, and for each other node the typed error saying why (no such process,
        not connected, timed out, crashed). Returns within `timeout` in every case."""
        return await multi_call(current_node(), name, msg, nodes, timeout)

    @staticmethod
    def abcast(name: str, msg: Any, *, nodes: Iterable[NodeId | str] | None = None) -> None:
        """Cast `msg` to the process registered locally as `name` on each node of `nodes`
        (None: this node and every connected peer), like OTP's `gen_server:abcast`; fire and
        forget (a node without it, or not connected, is skipped)."""
        abcast(current_node(), name, msg, nodes)

    @staticmethod
    def cast(target: Target, msg: Any) -> None:
        """Send `msg` to `handle_cast`; fire and forget."""
        current_node()._send(target, CAST, msg)  # (`Node.cast`'s body: one call less per cast)

    @staticmethod
    def send(target: Target, msg: Any) -> None:
        """Send `msg` to `handle_info`; fire and forget."""
        current_node()._send(target, INFO, msg)

    @staticmethod
    def stop(target: Target, reason: ExitReason = NORMAL, *, timeout: float = 5.0) -> Coroutine[Any, Any, None]:
        """Stop after the messages already queued; `terminate(reason, state)` runs:
        `await GenServer.stop(target)` returns once the process has exited.

        (Like `call`, it returns the stop's coroutine itself; nothing is sent until it is awaited.)"""
        return current_node().stop_process(target, reason, timeout)

    @staticmethod
    def reply(from_: From, value: Any) -> None:
        """Answer a call whose `handle_call` returned `NoReply`."""
        if not isinstance(from_, From):
            raise InvalidArgumentError(f"reply needs the From of a call (self.caller), not {from_!r}")
        if not from_.reply_to.done():
            from_.reply_to.set_result(value)

    @staticmethod
    def send_after(target: Target, msg: Any, delay: float) -> TimerRef:
        """Send `msg` to `handle_info` of `target` after `delay` seconds."""
        return current_node().send_after(target, msg, delay)

    @staticmethod
    def cancel_timer(timer: TimerRef) -> bool:
        """Cancel a timer; True if it had not fired yet."""
        return current_node().cancel_timer(timer)

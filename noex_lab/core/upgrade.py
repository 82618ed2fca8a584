"""Hot code upgrade: running processes take new behavior code without a restart.

A behavior is known by its name in `BehaviorRegistry`. Upgrading a name to a new class asks
every process running an older class of that name to swap its code *between two messages*
(a system request, see `systools.py`): an idle process at once, a busy one when its current
callback returns. The swap keeps the process (its ref, mailbox, links, monitors, name) and
its state; if the new class defines `code_change(old_vsn, state, extra)`, the state it returns
replaces the old one. A `code_change` that raises leaves the process on its old code with its
old state (an `upgrade_failed` event and a log warning say why): an upgrade never kills.

Processes started after the upgrade run the new class, even when started from a reference
to an old class (a supervisor's `ChildSpec`): `latest(cls)`.

Versions: a class attribute `vsn` names a version; without one, a short fingerprint of the
class's source (the cell it came from, for `%%noex behavior`) stands for it.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .node_id import NodeId
from .refs import ProcessRef
from .systools import HANDLERS, SysOp, request, sys_of, wrap_handlers

if TYPE_CHECKING:
    from ._backend import FutureLike
    from .genserver import GenServer
    from .node import Node
    from .process import Process

log = logging.getLogger("noex_lab")

OUTCOMES = ("upgraded", "failed", "pending", "exited", "current")

_lock = threading.Lock()
_names: weakref.WeakKeyDictionary[type, set[str]] = weakref.WeakKeyDictionary()  # class -> behavior names
_successor: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()  # class -> its replacement
_fingerprints: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
_pending: weakref.WeakKeyDictionary[Process, type] = weakref.WeakKeyDictionary()  # asked, not yet run


# ----------------------------------------------------------------------------------- names and versions
def note_name(cls: type, name: str) -> None:
    """Remember that `cls` was registered as behavior `name` (its processes are that behavior's);
    registering a class makes it current again (new processes of it run it, not a successor)."""
    with _lock:
        _names.setdefault(cls, set()).add(name)
        _successor.pop(cls, None)


def names_of(cls: type) -> set[str]:
    with _lock:
        return set(_names.get(cls, ()))



def latest(cls: type[GenServer]) -> type[GenServer]:
    """The class that replaced `cls` by an upgrade (and so on), or `cls` itself."""
    if not _successor:  # no upgrade yet (every start asks)
        return cls
    seen = 0
    while seen < 1000:  # a chain, never a cycle (upgrade refuses one): bounded anyway
        nxt = _successor.get(cls)
        if nxt is None or nxt is cls:
            return cls
        cls = nxt
        seen += 1
    return cls


def set_source(cls: type, source: str) -> None:
    """The source `cls` was built from (a notebook cell): its fingerprint names its version."""
    _fingerprints[cls] = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:7]


def fingerprint(cls: type) -> str:
    known = _fingerprints.get(cls)
    if known is None:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = f"{cls.__module__}.{cls.__qualname__}@{id(cls):x}"
        set_source(cls, source)
        known = _fingerprints[cls]
    return known


def vsn_of(cls: type) -> Any:
    """The class's `vsn` attribute (None when it names none)."""
    return getattr(cls, "vsn", None)


def version_of(cls: type) -> str:
    """How `%noex upgrade` names the version of `cls`: its `vsn`, else `#` and a fingerprint."""
    vsn = vsn_of(cls)
    return str(vsn) if vsn is not None else "#" + fingerprint(cls)


# ----------------------------------------------------------------------------------- one process
@dataclass(frozen=True)
class UpgradeResult:
    """What became of one process: `outcome` is "upgraded", "failed" (kept its old code; `error`
    says why), "pending" (busy in a callback: it upgrades when that returns), "exited" (ended
    before its next message) or "current" (it already ran the new code)."""

    ref: ProcessRef
    node: NodeId | None
    behavior: str
    outcome: str
    from_vsn: str
    to_vsn: str
    error: str | None = None

    def __str__(self) -> str:
        what = f"{self.ref} {self.behavior} {self.from_vsn} -> {self.to_vsn}: {self.outcome}"
        return f"{what} ({self.error})" if self.error else what


def _swap(proc: Process, new_cls: type[GenServer], state: Any, new_server: GenServer) -> None:
    proc.server = new_server
    proc.node._count_behavior(proc.behavior, -1)
    proc.behavior = new_cls
    proc.node._count_behavior(new_cls, 1)
    proc.state = state
    proc.trap_exit = bool(getattr(new_cls, "trap_exit", False))
    wrap_handlers(proc)  # statistics on: time the new handlers too


def request_upgrade(
    proc: Process, name: str, new_cls: type[GenServer], extra: Any,
    notify: Callable[[UpgradeResult], None] | None = None,
) -> FutureLike:
    """Ask `proc` to run `new_cls` from its next message on (see the module doc)."""
    from .process import CRASHES

    node = proc.node

    def result(outcome: str, from_vsn: str, error: str | None = None) -> UpgradeResult:
        return UpgradeResult(proc.ref, node.id, name, outcome, from_vsn, version_of(new_cls), error)

    async def run(p: Process, op: SysOp) -> None:
        if _pending.get(p) is new_cls:
            del _pending[p]
        old_cls = p.behavior
        from_vsn = version_of(old_cls)
        if old_cls is new_cls:
            op.settle(result("current", from_vsn))
            return
        old_server = p.server
        try:
            new_server = new_cls()
            new_server.__dict__.update({k: v for k, v in vars(old_server).items() if k not in HANDLERS})
            new_server._noex_process = p
            state = new_server.code_change(vsn_of(old_cls), p.state, extra)
            if inspect.isawaitable(state):
                state = await state
        except CRASHES as exc:
            error = f"{type(exc).__name__}: {exc}"
            sys_of(p).upgrade_error = error
            log.warning("upgrade of %s (%s %s -> %s) failed; it keeps its old code: %s",
                        p.ref, name, from_vsn, version_of(new_cls), error, exc_info=exc)
            node.events.emit("upgrade_failed", ref=p.ref, name=p.name, behavior=name, from_vsn=from_vsn,
                             to_vsn=version_of(new_cls), error=error)
            op.settle(result("failed", from_vsn, error))
            return
        _swap(p, new_cls, state, new_server)
        sys_of(p).upgrade_error = None
        node.events.emit("process_upgraded", ref=p.ref, name=p.name, behavior=name, from_vsn=from_vsn,
                         to_vsn=version_of(new_cls))
        op.settle(result("upgraded", from_vsn))

    from_vsn = version_of(proc.behavior)

    def settled(value: Any, error: BaseException | None) -> None:
        if notify is not None:
            notify(value if isinstance(value, UpgradeResult) else result("exited", from_vsn, str(error)))

    fut = request(proc, run, settled)
    _pending[proc] = new_cls
    return fut


def pending_upgrade(proc: Process) -> type | None:
    """The class `proc` was asked to upgrade to and has not switched to yet (busy in a callback)."""
    return _pending.get(proc) if proc.alive else None


# ----------------------------------------------------------------------------------- many processes
class Upgrade:
    """The processes one upgrade asked to swap their code; `await upgrade.wait()` (or
    `await upgrade`) gives an `UpgradeResult` per process once each ran its next message
    boundary, or when `timeout` passed (the rest reported "pending": they still upgrade)."""

    def __init__(self, name: str, behavior: type[GenServer]) -> None:
        self.name = name
        self.behavior = behavior
        self.requested: list[Process] = []
        self.results: dict[ProcessRef, UpgradeResult] = {}
        self._waiters: list[FutureLike] = []

    def _add(self, proc: Process, extra: Any) -> None:
        self.requested.append(proc)
        request_upgrade(proc, self.name, self.behavior, extra, self._done)

    def _done(self, result: UpgradeResult) -> None:
        self.results[result.ref] = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float = 5.0) -> list[UpgradeResult]:
        if not self.requested:
            return self.snapshot()
        monotonic = self.requested[0].node.clock.monotonic
        deadline = monotonic() + timeout
        while len(self.results) < len(self.requested):
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            waiter = self.requested[0].node.backend.new_future()
            self._waiters.append(waiter)
            try:
                await self.requested[0].node.backend.wait_future(waiter, remaining)
            except TimeoutError:
                break
        return self.snapshot()

    def snapshot(self) -> list[UpgradeResult]:
        """One result per process so far (not yet done: "pending", or "exited")."""
        out = []
        to_vsn = version_of(self.behavior)
        for proc in self.requested:
            done = self.results.get(proc.ref)
            if done is None:
                outcome = "pending" if proc.alive else "exited"
                done = UpgradeResult(proc.ref, proc.node.id, self.name, outcome, version_of(proc.behavior), to_vsn)
            out.append(done)
        return out

    def __await__(self) -> Generator[Any, None, list[UpgradeResult]]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        done = sum(1 for r in self.results.values() if r.outcome in ("upgraded", "current"))
        return f"<Upgrade {self.name!r} -> {version_of(self.behavior)}: {done} of {len(self.requested)} done>"


def upgrade_processes(
    nodes: Iterable[Node], name: str, new_cls: type[GenServer], extra: Any = None,
    which: Callable[[type], bool] | None = None,
) -> Upgrade:
    """Ask every process on `nodes` running an older class of behavior `name` (and accepted by
    `which`) to swap to `new_cls`; from now on new processes of those classes run `new_cls`."""
    from .genserver import GenServer

    if not (isinstance(new_cls, type) and issubclass(new_cls, GenServer)):
        raise InvalidArgumentError(f"{new_cls!r} is not a GenServer subclass")
    note_name(new_cls, name)  # (going back to an older class makes it current again: never a cycle)
    with _lock:
        old = [cls for cls, names in _names.items() if name in names and cls is not new_cls
               and (which is None or which(cls))]
        for cls in old:
            _successor[cls] = new_cls
    upgrade = Upgrade(name, new_cls)
    for node in nodes:
        for proc in node.processes():
            cls = proc.behavior
            if cls is not new_cls and proc.alive and not proc._closed and cls in old:
                upgrade._add(proc, extra)
    return upgrade

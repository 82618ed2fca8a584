"""Typed errors of noex_lab: every error a user can see is a `NoexError`, defined here.

One module, so that a failed remote request is rebuilt with its own class on the caller's side
(`distribution.routing.decode_error` looks the class name up here) and callers match errors by
type, never by text. The lab's own errors (`noex_lab.lab.errors`) never cross the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import tracebacks

if TYPE_CHECKING:
    from .node_id import NodeId
    from .refs import ProcessRef


class NoexError(Exception):
    """Base class of every error raised by noex_lab."""


class InvalidArgumentError(NoexError, ValueError):
    """An argument has the wrong form; the message says which and why."""


class CallTimeoutError(NoexError, TimeoutError):
    """A call got no reply within its timeout."""

    def __init__(self, target: object, timeout: float, hint: str | None = None) -> None:
        hint = hint or "the server is slow or blocked; raise timeout= or check it with %noex state"
        super().__init__(f"call to {target} got no reply within {timeout:g} s ({hint})")
        self.target = target
        self.timeout = timeout


class WaitTimeoutError(NoexError, TimeoutError):
    """An awaited condition (`Cluster.wait_for_nodes`, `DistributedSupervisor.wait_stable`) did not
    hold within its timeout; the message says what was awaited and what the state was."""

    def __init__(self, what: str, timeout: float, state: str) -> None:
        super().__init__(f"{what} did not happen within {timeout:g} s; now: {state}")
        self.what = what
        self.timeout = timeout
        self.state = state


class SendTimeoutError(NoexError, TimeoutError):
    """The connection to a node stayed busy (its peer reads slower than we send) past a deadline."""

    def __init__(self, node: object, timeout: float) -> None:
        super().__init__(
            f"the connection to {node} was still busy after {timeout:g} s (the peer reads slower than "
            "this node sends: send less, raise timeout=, or check the peer with %noex nodes)"
        )
        self.node = node
        self.timeout = timeout


class ServerNotRunningError(NoexError):
    """The target process does not exist (any more): Erlang's `noproc`."""

    def __init__(self, target: object, reason: Any = "noproc") -> None:
        super().__init__(f"no process {target} is running (exit reason: {reason!r})")
        self.target = target
        self.reason = reason


class MailboxFullError(NoexError):
    """The target's mailbox is at its `max_mailbox` bound: this message was refused, not queued."""

    def __init__(self, target: object, max_mailbox: int, overflow: str = "drop_newest") -> None:
        super().__init__(
            f"the mailbox of {target} is full (max_mailbox={max_mailbox}, overflow={overflow!r}); the message "
            "was not queued. The server does not keep up: slow the senders down, add workers or raise max_mailbox"
        )
        self.target = target
        self.max_mailbox = max_mailbox
        self.overflow = overflow


class TooManyTracesError(NoexError):
    """The target node already runs as many traces for the requesting node as it allows."""

    def __init__(self, node: object, limit: int) -> None:
        super().__init__(
            f"node {node} already runs {limit} traces for this node (the most one node may hold); "
            "stop one (TraceHandle.stop(), %noex trace --stop) or wait for one to end"
        )
        self.node = node
        self.limit = limit


class NodeNotReachableError(NoexError):
    """No connection to the target's node, or it was lost while the request was pending."""

    def __init__(self, node: object, detail: str = "not connected") -> None:
        super().__init__(f"node {node} is not reachable: {detail}")
        self.node = node
        self.detail = detail


class NodeFencedError(NodeNotReachableError):
    """This node is fenced: a partition left it on the losing side of its partition policy
    (`Cluster.start(partition_policy=...)`), so it runs no supervised children and claims no
    global names until it rejoins the winning side. Retry after the partition heals, or ask a
    node of the winning side."""

    def __init__(self, node: object, detail: str = "fenced by the partition policy") -> None:
        super().__init__(node, detail)


class CallError(NoexError):
    """The server raised while handling this very call (it crashed; let it crash).

    Says where: `process` (its ref), `behavior` (class name) and `node`, when the server's
    node sent them. Its traceback display (a terminal, via `__notes__`; IPython and Jupyter,
    via `_render_traceback_`) shows the server's traceback with noex_lab's own frames folded
    away (`noex_lab.show_library_frames()` shows them)."""

    def __init__(
        self, exc_type: str, message: str, remote_traceback: str = "", *, process: ProcessRef | None = None,
        behavior: str = "", node: NodeId | None = None,
    ) -> None:
        if node is None and process is not None:
            node = getattr(process, "node", None)
        where = ", ".join(part for part in (
            f"behavior {behavior}" if behavior else "", f"process {process}" if process is not None else "",
            f"node {node}" if node is not None else "") if part)
        super().__init__(f"the server crashed handling the call: {exc_type}: {message}"
                         + (f" ({where})" if where else ""))
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.process = process
        self.behavior = behavior
        self.node = node
        if remote_traceback:
            self.__notes__ = [self._remote_header(), tracebacks.fold(remote_traceback.rstrip())]

    def _remote_header(self) -> str:
        who = " ".join(part for part in (
            f"process {self.process}" if self.process is not None else "the server",
            f"(behavior {self.behavior})" if self.behavior else "",
            f"on node {self.node}" if self.node is not None else "") if part)
        fold = "" if tracebacks.library_frames_shown() or not tracebacks.folded_count(self.remote_traceback) \
            else " (noex_lab.show_library_frames() shows the folded frames)"
        return f"--- remote traceback: {who} crashed handling this call{fold}:"

    def _render_traceback_(self) -> list[str]:
        """IPython's hook (as ipyparallel's RemoteError has): the caller's own frames, then where
        and how the server crashed, library frames folded."""
        red, bold, dim, reset = "\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m"
        lines = [f"{red}{bold}CallError{reset}  Traceback (most recent call last)"]
        lines += tracebacks.user_frames(self.__traceback__)
        lines.append(f"{red}{bold}CallError{reset}: {self}")
        if self.remote_traceback:
            lines.append("")
            lines.append(f"{bold}{self._remote_header().removeprefix('--- ')}{reset}")
            for line in tracebacks.fold(self.remote_traceback.rstrip()).splitlines():
                if line.lstrip().startswith("[") and "folded]" in line:
                    lines.append(f"{dim}{line}{reset}")
                elif line.lstrip().startswith(("Cell In[", "File ")):
                    lines.append(f"{bold}{line}{reset}")
                elif line and not line.startswith(" ") and not line.startswith("Traceback"):
                    lines.append(f"{red}{line}{reset}")
                else:
                    lines.append(line)
        return lines


class InitError(NoexError):
    """A process's `init` raised, timed out or was refused; `reason` says why."""

    def __init__(self, behavior: str, detail: str, reason: Any = None) -> None:
        super().__init__(f"{behavior}.init failed: {detail}")
        self.behavior = behavior
        self.detail = detail
        self.reason = reason


class AlreadyRegisteredError(NoexError):
    """The name is already registered to another live process."""

    def __init__(self, name: str, owner: object) -> None:
        super().__init__(f"name {name!r} is already registered to {owner}")
        self.name = name
        self.owner = owner


class NotRegisteredError(NoexError, LookupError):
    """No process is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no process is registered as {name!r}")
        self.name = name


class MaxRestartsExceededError(NoexError):
    """A supervisor restarted children more than its intensity allows and gave up."""

    def __init__(self, max_restarts: int, within_ms: int) -> None:
        super().__init__(
            f"more than {max_restarts} restarts within {within_ms} ms; the supervisor stopped"
        )
        self.max_restarts = max_restarts
        self.within_ms = within_ms


class SupervisorError(NoexError):
    """A supervisor operation was refused (unknown child id, duplicate id, wrong strategy)."""


class BehaviorDefinitionError(NoexError, TypeError):
    """A class is defined in a way the runtime cannot run: a `StateMachine` that defines
    `handle_call`/`handle_cast`/`handle_info`, a subclass of `NoReply` or `Stop`. Raised where the
    class statement is; also a `TypeError`, as Python's own class-definition errors are."""


class BadReturnError(NoexError, TypeError):
    """A callback returned something the runtime cannot interpret (the process crashes with this
    reason, as with any exception in a callback; the message says what was expected)."""


class SerializationError(NoexError):
    """A value cannot travel over the wire (or is larger than max_message_bytes)."""


class BehaviorNotFoundError(NoexError):
    """No behavior is registered under this name on the target node."""

    def __init__(self, name: str, node: object = None) -> None:
        where = f" on {node}" if node is not None else ""
        super().__init__(
            f"no behavior registered as {name!r}{where} "
            "(register it with BehaviorRegistry.register on that node)"
        )
        self.name = name
        self.node = node


class GlobalNameConflictError(NoexError):
    """Another process holds (or won the claim for) this global name."""

    def __init__(self, name: str, owner: object = None) -> None:
        super().__init__(f"global name {name!r} is taken by {owner}")
        self.name = name
        self.owner = owner


class GlobalNameNotFoundError(NoexError, LookupError):
    """No process is registered under this global name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no process is registered globally as {name!r}")
        self.name = name


class RemoteFunctionNotFoundError(NoexError, LookupError):
    """No function is registered under this name (`@remote_function`) on the target node."""

    def __init__(self, name: str, node: object = None) -> None:
        where = f" on {node}" if node is not None else ""
        super().__init__(
            f"no remote function registered as {name!r}{where} "
            "(decorate it with @noex_lab.remote_function in code that node imports)"
        )
        self.name = name
        self.node = node


class RemoteFunctionError(NoexError):
    """A remote function (`Rpc.call`) raised: its type name, message and traceback text."""

    def __init__(self, name: str, node: object, exc_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"remote function {name!r} on {node} raised {exc_type}: {message}")
        self.name = name
        self.node = node
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = remote_traceback


class ReplaceStateError(NoexError):
    """`replace_state` did not replace the state: the function raised, or the hold on a remote
    process expired first. The process kept its state and runs on."""


class NodeStoppedError(NoexError):
    """The node was stopped (or killed); it runs no more processes."""


class NotPermittedError(NoexError):
    """A peer asked for a change only another node may make (a name it does not own, a lock it
    does not hold, a link for a process of a third node)."""


class ClusterError(NoexError):
    """Starting or using the cluster failed (bad config, port in use, refused bind)."""


class MissingExtraError(NoexError, ImportError):
    """An optional feature needs a package that is not installed; the message names the extra."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} package, which is not installed: "
            f"pip install 'noex-lab[{extra}]' (or pip install {package})"
        )
        self.feature = feature
        self.package = package
        self.extra = extra


class AuthenticationError(NoexError):
    """A peer failed the cluster handshake (wrong secret, replay, protocol mismatch)."""


class HandshakeRefusedError(AuthenticationError):
    """The other side refused the handshake; `reason` says why (retrying does not help)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProtocolError(NoexError):
    """A peer sent bytes that break the protocol; its connection is closed."""


class DecodeError(NoexError):
    """Bytes from a peer are not a valid message (malformed, truncated, unknown type or too big)."""


class CodeLoadingError(NoexError):
    """A node refused shipped code, or the code failed to load there."""


class SecretFileError(NoexError):
    """The per-user secret file cannot be used (unsafe permissions, unreadable, empty)."""


class ProcessOutputError(NoexError, AssertionError):
    """A child process did not print what was awaited in time, or exited first; the message
    holds its last output (an AssertionError too, so a test that waits on one simply fails)."""


class UnknownOperationError(NoexError):
    """The target node has no handler for this system request (it runs a noex_lab without that
    feature, or a peer sent a name no version knows)."""


class UnsupportedEventLoopError(NoexError, RuntimeError):
    """noex_lab was called outside a running asyncio or trio event loop (or on another one):
    run it under `asyncio.run`, `trio.run` or `anyio.run`, or in a notebook cell."""


class RemoteError(NoexError):
    """An exception that travelled over the wire: its type name, message and traceback text."""

    def __init__(self, exc_type: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RemoteError)
            and (self.exc_type, self.message, self.traceback)
            == (other.exc_type, other.message, other.traceback)
        )

    def __hash__(self) -> int:
        return hash((self.exc_type, self.message, self.traceback))

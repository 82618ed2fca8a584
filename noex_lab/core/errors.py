"""Typed errors of noex_lab: every error a user can see is a `NoexError`."""

from __future__ import annotations

from typing import Any


class NoexError(Exception):
    """Base class of every error raised by noex_lab."""


class InvalidArgumentError(NoexError, ValueError):
    """An argument has the wrong form; the message says which and why."""


class CallTimeoutError(NoexError, TimeoutError):
    """A call got no reply within its timeout."""

    def __init__(self, target: object, timeout: float) -> None:
        super().__init__(
            f"call to {target} got no reply within {timeout:g} s "
            "(the server is slow or blocked; raise timeout= or check it with %noex state)"
        )
        self.target = target
        self.timeout = timeout


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


class CallError(NoexError):
    """The server raised while handling this very call (it crashed; let it crash)."""

    def __init__(self, exc_type: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"the server crashed handling the call: {exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = remote_traceback


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


class ReplaceStateError(NoexError):
    """`replace_state` did not replace the state: the function raised, or the hold on a remote
    process expired first. The process kept its state and runs on."""


class NodeStoppedError(NoexError):
    """The node was stopped (or killed); it runs no more processes."""


class ClusterError(NoexError):
    """Starting or using the cluster failed (bad config, port in use, refused bind)."""


class AuthenticationError(NoexError):
    """A peer failed the cluster handshake (wrong secret, replay, protocol mismatch)."""


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

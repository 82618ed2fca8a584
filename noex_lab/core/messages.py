"""Messages the runtime delivers and values callbacks return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import BehaviorDefinitionError
from .reasons import ExitReason
from .refs import MonitorRef, ProcessRef

_NO_REPLY: Any = object()


@dataclass(frozen=True, slots=True)
class Down:
    """A monitored process exited (or was unreachable); delivered to `handle_info`."""

    monitor: MonitorRef
    ref: ProcessRef
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class Exit:
    """A linked process exited; delivered to `handle_info` of a process with `trap_exit`."""

    from_: ProcessRef
    reason: ExitReason


@dataclass(slots=True)
class NoReply:
    """Returned from `handle_call` to answer later with `GenServer.reply(from_, value)`."""

    state: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:  # the process loop tests `type(result) is NoReply`
        raise BehaviorDefinitionError("NoReply cannot be subclassed: return NoReply(state) itself")


@dataclass(slots=True)
class Stop:
    """Returned from a callback to stop the process with `reason` after this message."""

    reason: ExitReason
    state: Any
    reply: Any = field(default=_NO_REPLY)

    @property
    def has_reply(self) -> bool:
        return self.reply is not _NO_REPLY

    def __init_subclass__(cls, **kwargs: Any) -> None:  # the process loop tests `type(result) is Stop`
        raise BehaviorDefinitionError("Stop cannot be subclassed: return Stop(reason, state) itself")

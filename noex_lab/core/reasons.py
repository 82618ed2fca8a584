"""Exit reasons: the OTP atoms as strings, or an `ErrorReason` for a crash."""

from __future__ import annotations

import traceback as _traceback
from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class ErrorReason:
    """Why a process crashed; the same shape locally and across nodes."""

    exc_type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorReason:
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), text)

    def __str__(self) -> str:
        return f"{self.exc_type}: {self.message}"

    def _repr_html_(self) -> str:
        from html import escape

        return (
            f"<details><summary><b style='color:#b00'>{escape(self.exc_type)}</b>: "
            f"{escape(self.message)}</summary><pre>{escape(self.traceback)}</pre></details>"
        )


# "normal" | "shutdown" | "killed" | "noproc" | "noconnection" | ErrorReason | other wire values
ExitReason: TypeAlias = Any

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"
PARTITION_FENCED = "partition_fenced"  # stopped because its node is on the losing side of a partition


def is_normal_exit(reason: ExitReason) -> bool:
    """True for "normal" and "shutdown": exits a transient child is not restarted after."""
    return bool(reason == NORMAL or reason == SHUTDOWN)
MAILBOX_OVERFLOW = "mailbox_overflow"  # a process started with overflow="crash" got a message when full

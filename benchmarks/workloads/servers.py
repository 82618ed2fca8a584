"""The server behavior the workloads measure: a counter, as in the reference harnesses."""

from __future__ import annotations

from typing import Any

from noex_lab import GenServer


class BenchCounter(GenServer):
    """`"get"` -> the count; `"reset"` -> 0; cast `"inc"` adds one."""

    def init(self, arg: Any) -> int:
        return 0

    def handle_call(self, msg: Any, state: int) -> tuple[int, int]:
        if msg == "get":
            return state, state
        if msg == "reset":
            return 0, 0
        raise ValueError(f"BenchCounter: unknown call {msg!r}")

    def handle_cast(self, msg: Any, state: int) -> int:
        if msg == "inc":
            return state + 1
        return state

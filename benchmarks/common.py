"""Shared pieces of the benchmark harness: workload descriptions, results and JSON lines.

Every workload module in `benchmarks/workloads/` defines one `WORKLOAD = Workload(...)`.
`run.py` runs each selected workload in a child process of its own (a fresh interpreter,
a fresh event loop, a hard deadline) and prints the JSON lines of WORKLOADS.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PEER = "noex_lab"


@dataclass(frozen=True)
class Line:
    """One JSON line a workload reports (WORKLOADS.md "Workload ids used in the workload field")."""

    workload: str  # e.g. "W1-local-call"
    unit: str  # e.g. "calls/s"
    # Target as a ratio of the ceiling measured in the same run (None: no target).
    target_ratio: float | None = None
    # True for rates (ours / ceiling must be >= target), False for latencies and durations
    # (ours / ceiling must be <= target).
    higher_is_better: bool = True
    # params.variant of the line; None: the run's own variant ("default", or the backend's name).
    variant: str | None = None
    # An absolute target (in `unit`) where there is no ceiling, e.g. W6/W7's issue targets;
    # compared with `higher_is_better` like the ratio (None: no absolute target).
    abs_target: float | None = None
    abs_note: str = ""  # where the absolute target comes from ("issue acceptance")
    # A speed (a rate or a latency), not a size: on uvloop the ratio target is issue 19's
    # (UVLOOP_SPEED_RATIO of that ceiling's speed, run.py `ratio_target`).
    speed: bool = True


@dataclass(frozen=True)
class Context:
    """What a workload gets from the runner."""

    backend: str  # anyio backend the workload runs on ("asyncio" by default)
    deadline_s: float  # the whole workload must finish within this many seconds
    base_params: dict[str, Any]  # variant, loop, impl: copied into every line's params

    def params(self, **extra: Any) -> dict[str, Any]:
        return {**self.base_params, **extra}


@dataclass(frozen=True)
class Measurement:
    workload: str
    value: float | None  # None: this line failed (params["error"] says why)
    unit: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """A workload of WORKLOADS.md as this harness implements it."""

    id: str  # "W1" .. "W7": what --workloads selects
    name: str  # "local-call"
    lines: tuple[Line, ...]
    # Runs inside the child process, under anyio.run on ctx.backend, within ctx.deadline_s.
    run: Callable[[Context], Awaitable[list[Measurement]]]
    # Whether ../shared/bench/limit-asyncio/bench.py measures this workload (W1-W5 do).
    has_ceiling: bool = True
    description: str = field(default="")


class CheckFailed(RuntimeError):
    """A workload's correctness check failed: the run is an error, not a number."""


def emit_line(peer: str, workload: str, value: float | None, unit: str, params: dict[str, Any]) -> str:
    """One JSON line in the WORKLOADS.md format (printed and flushed at once)."""
    text = json.dumps({"peer": peer, "workload": workload, "value": value, "unit": unit, "params": params})
    print(text, flush=True)
    return text


def impl_string() -> str:
    """Versions that explain a number: interpreter, noex_lab, anyio."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"noex_lab {version('noex-lab')}, anyio {version('anyio')}"
    )


def base_params(backend: str, loop: str = "asyncio") -> dict[str, Any]:
    """The params every line of a run starts from. Variant: "default" (asyncio's own loop),
    "uvloop" (asyncio on uvloop: our workload process and its node processes) or "trio"."""
    if backend != "asyncio":
        return {"variant": backend, "loop": backend, "impl": impl_string()}
    variant = "default" if loop == "asyncio" else loop
    return {"variant": variant, "loop": loop, "impl": impl_string()}


def rate(n: int, elapsed_ns: int) -> float:
    """Operations per second, rounded like the reference harness."""
    return round(n / (elapsed_ns / 1e9), 1)

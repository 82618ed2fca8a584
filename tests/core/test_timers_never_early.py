"""A timer never fires before its delay has passed, by the wall clock, on asyncio and on uvloop
(whose timers count whole milliseconds: send_after timers fired up to 1.2 ms early there before
the backend added its slack, `noex_lab.core._backend.timer_slack`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from noex_lab import CallTimeoutError, GenServer, NoReply
from noex_lab.core.node import Node


class _Clock(GenServer):
    """Records the perf_counter of every info message it gets."""

    def init(self, arg: Any) -> Any:
        return []

    def handle_info(self, msg: Any, state: Any) -> Any:
        return [*state, (msg, time.perf_counter())]

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "never":  # a call nobody answers: its timeout ends it
            return NoReply(state)
        return state, state


def _factories() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    import uvloop  # (the [fast] extra, which `make` installs)

    return [asyncio.new_event_loop, uvloop.new_event_loop]


async def _timers_and_timeouts() -> tuple[float, float]:
    """(the smallest lateness of 60 send_after timers, of 20 call timeouts), in seconds."""
    node = await Node().start()
    ref = await GenServer.start(_Clock)
    delays = [0.0105 + 0.0001 * i for i in range(60)]
    sent: dict[int, float] = {}
    for i, delay in enumerate(delays):
        sent[i] = time.perf_counter()
        GenServer.send_after(ref, i, delay)
        await asyncio.sleep(0.0007 * (i % 3))  # (timers armed at different points of a millisecond)
    got: list[tuple[int, float]] = []
    for _ in range(200):  # until every timer fired (bounded: 200 x 10 ms)
        got = await GenServer.call(ref, "get")
        if len(got) == len(delays):
            break
        await asyncio.sleep(0.01)
    assert len(got) == len(delays), got
    timer_lateness = min(at - sent[i] - delays[i] for i, at in got)
    timeout_lateness = 1.0
    for i in range(20):
        timeout = 0.0105 + 0.0003 * i
        started = time.perf_counter()
        with pytest.raises(CallTimeoutError):
            await GenServer.call(ref, "never", timeout=timeout)
        timeout_lateness = min(timeout_lateness, time.perf_counter() - started - timeout)
    await node.stop()
    return timer_lateness, timeout_lateness


@pytest.mark.timeout(60)
def test_send_after_and_call_timeouts_never_fire_early() -> None:
    for factory in _factories():
        with asyncio.Runner(loop_factory=factory) as runner:
            timer_lateness, timeout_lateness = runner.run(_timers_and_timeouts())
        name = factory.__module__
        assert timer_lateness >= 0, f"{name}: a send_after timer fired {-timer_lateness * 1e3:.3f} ms early"
        assert timeout_lateness >= 0, f"{name}: a call timed out {-timeout_lateness * 1e3:.3f} ms early"

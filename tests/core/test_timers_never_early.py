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
    """Tells `arrived(msg, perf_counter)` (its start argument) of every info message it gets."""

    def init(self, arg: Any) -> Any:
        return arg

    def handle_info(self, msg: Any, state: Any) -> Any:
        state(msg, time.perf_counter())
        return state

    def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "never":  # a call nobody answers: its timeout ends it
            return NoReply(state)
        return None, state


def _factories() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    import uvloop  # (the [fast] extra, which `make` installs)

    return [asyncio.new_event_loop, uvloop.new_event_loop]


async def _timers_and_timeouts() -> tuple[float, float]:
    """(the smallest lateness of 60 send_after timers, of 20 call timeouts), in seconds."""
    node = await Node().start()
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[float]] = {}
    ref = await GenServer.start(_Clock, lambda msg, at: waiting[msg].set_result(at))
    timer_lateness = 1.0
    for i in range(60):
        # one timer at a time, each armed as the last one fired: at varied points of a millisecond
        delay = 0.0105 + 0.0001 * i
        waiting[i] = loop.create_future()
        sent = time.perf_counter()
        GenServer.send_after(ref, i, delay)
        fired = await asyncio.wait_for(waiting[i], 1.0)
        timer_lateness = min(timer_lateness, fired - sent - delay)
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

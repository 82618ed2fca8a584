"""Every `timeout=` of the core's public API goes through one check (`check_timeout`): NaN,
infinity, negative, zero and non-number timeouts are refused with a clear `InvalidArgumentError`
instead of misbehaving (a NaN slips through `timeout <= 0`; inf breaks the loop's timers)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest

from noex_lab import ChildSpec, GenServer, Supervisor
from noex_lab.core.node import Node
from noex_lab.core.timeouts import MAX_TIMEOUT_S, check_limit, check_timeout, seconds_argument
from noex_lab.errors import InvalidArgumentError

from ._helpers import Pawn

pytestmark = pytest.mark.anyio

BAD = [math.nan, math.inf, -math.inf, -1, 0, "5", None, True, 10**400, 1e308]


def test_check_timeout_accepts_positive_finite_numbers() -> None:
    assert check_timeout(5.0) == 5.0 and check_timeout(2) == 2.0 and check_timeout(Fraction(1, 4)) == 0.25
    assert type(check_timeout(2)) is float
    assert check_timeout(0, "delay", allow_zero=True) == 0.0
    assert check_timeout(3600, "seconds", maximum=3600) == 3600.0
    assert check_timeout(MAX_TIMEOUT_S) == 1e9  # about 31 years: the longest wait


@pytest.mark.parametrize("bad", BAD)
def test_check_timeout_refuses_with_a_clear_message(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^timeout must be (a |a finite |> 0 |at most 1e\+09 )"):
        check_timeout(bad)


def test_check_timeout_messages_say_what_is_wrong() -> None:
    cases = {math.nan: "timeout must be a number of seconds, not NaN",
             math.inf: "timeout must be a finite number of seconds, not inf",
             -1: "timeout must be > 0 seconds, not -1", "5": "timeout must be a number of seconds, not '5'"}
    for value, text in cases.items():
        with pytest.raises(InvalidArgumentError) as caught:
            check_timeout(value)
        assert str(caught.value) == text
    with pytest.raises(InvalidArgumentError, match=r"timeout must be at most 1e\+09 seconds, not 1e\+308"):
        check_timeout(1e308)  # finite, but a deadline computed from it would overflow the loop's timers
    with pytest.raises(InvalidArgumentError, match="seconds must be at most 3600 seconds, not 3601"):
        check_timeout(3601, "seconds", maximum=3600)
    with pytest.raises(InvalidArgumentError, match="delay must be >= 0 seconds"):
        check_timeout(-0.5, "delay", allow_zero=True)


def test_check_limit_maps_none_and_infinity_to_no_limit() -> None:
    assert check_limit(None) is None and check_limit(math.inf) is None and check_limit(0) == 0.0
    for bad in (math.nan, -1, "x", -math.inf):
        with pytest.raises(InvalidArgumentError):
            check_limit(bad)


def test_command_line_seconds() -> None:
    import argparse

    assert seconds_argument("0.25") == 0.25
    for bad in ("nan", "inf", "-1", "0", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds_argument(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0, "5", 1e308])
async def test_every_core_api_refuses_a_bad_timeout(node: Node, bad: Any) -> None:
    ref = await GenServer.start(Pawn)
    sup = await Supervisor.start(children=[ChildSpec(id="p", behavior=Pawn)])
    refused = [
        lambda: GenServer.call(ref, "ping", timeout=bad),
        lambda: GenServer.stop(ref, timeout=bad),
        lambda: GenServer.start(Pawn, timeout=bad),
        lambda: Supervisor.start(timeout=bad),
        lambda: Supervisor.which_children(sup, timeout=bad),
        lambda: Supervisor.count_children(sup, timeout=bad),
        lambda: Supervisor.start_child(sup, ChildSpec(id="q", behavior=Pawn), timeout=bad),
        lambda: Supervisor.terminate_child(sup, "p", timeout=bad),
        lambda: Supervisor.restart_child(sup, "p", timeout=bad),
        lambda: Supervisor.delete_child(sup, "p", timeout=bad),
        lambda: Supervisor.stop(sup, timeout=bad),
        lambda: node.stop(timeout=bad),
    ]
    for attempt in refused:
        with pytest.raises(InvalidArgumentError, match="timeout must be"):
            await attempt()
    if bad != 0:  # 0 is a valid delay and shutdown (at once); infinity a valid shutdown (no limit)
        with pytest.raises(InvalidArgumentError, match="delay must be"):
            GenServer.send_after(ref, "late", bad)
        if bad != math.inf:
            with pytest.raises(InvalidArgumentError, match="ChildSpec 'x': shutdown must be"):
                ChildSpec(id="x", behavior=Pawn, shutdown=bad)
            with pytest.raises(InvalidArgumentError, match="timeout must be"):
                await node.shutdown_process(ref, timeout=bad)
    # nothing was disturbed: the node and its processes still run
    assert await GenServer.call(ref, "ping") == "pong"
    assert len(await Supervisor.which_children(sup)) == 1
    assert node.running


async def test_an_infinite_shutdown_means_no_limit(node: Node) -> None:
    assert ChildSpec(id="x", behavior=Pawn, shutdown=math.inf).shutdown is None
    ref = await GenServer.start(Pawn)
    assert await node.shutdown_process(ref, timeout=math.inf) == "shutdown"

"""The one check for every `timeout=` (and other duration) a public API or a peer hands in.

A NaN slips through `timeout <= 0`, and NaN or infinity break the event loop's timers
(`math.ceil(inf)` raises; a NaN deadline corrupts a timer heap's order), so a bad value is
refused at the door with `InvalidArgumentError` instead of misbehaving later."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from .errors import InvalidArgumentError

_INF = math.inf
# The longest timeout (about 31 years): far beyond any real wait, and small enough that a
# deadline computed from it stays a finite float (1e308 overflows the loop's timer arithmetic).
MAX_TIMEOUT_S = 1e9


def check_timeout(value: Any, name: str = "timeout", *, allow_zero: bool = False,
                  maximum: float = MAX_TIMEOUT_S) -> float:
    """`value` as a float of seconds > 0 (>= 0 with `allow_zero`) and at most `maximum`.

    Refuses bools, non-numbers, NaN, infinity, negative and too large values with
    `InvalidArgumentError`."""
    if type(value) is float and 0.0 < value <= maximum:  # the common case, fast (NaN fails it)
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidArgumentError(f"{name} must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)
    except (OverflowError, ValueError):
        seconds = _INF
    if math.isnan(seconds):
        raise InvalidArgumentError(f"{name} must be a number of seconds, not NaN")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        least = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(f"{name} must be {least} seconds, not {value!r}")
    if seconds == _INF:
        raise InvalidArgumentError(f"{name} must be a finite number of seconds, not {value!r}")
    if seconds > maximum:
        raise InvalidArgumentError(f"{name} must be at most {maximum:g} seconds, not {value!r}")
    return seconds


def check_limit(value: Any, name: str = "timeout") -> float | None:
    """A wait that may be unlimited: None or infinity mean no limit (returned as None); otherwise
    as `check_timeout` with 0 allowed (0 means: do not wait)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == _INF:
        return None
    return check_timeout(value, name, allow_zero=True)


def seconds_argument(text: str) -> float:
    """argparse `type=` for a command-line duration in seconds (refuses nan, inf, <= 0)."""
    import argparse

    try:
        return check_timeout(float(text), "S")
    except ValueError as exc:  # (InvalidArgumentError is one)
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, InvalidArgumentError)
                                         else f"{text!r} is not a number of seconds") from None

"""The wire codec: exact-type round trips, clear sender-side errors, and safety on hostile bytes.

Breadth comes from parametrized cases plus a seeded generator of random nested wire values
(hand-rolled: no hypothesis in the venv). Decoding is fuzzed with seeded random bytes and with
truncations and bit flips of valid messages; every outcome must be a wire value or DecodeError.
"""

from __future__ import annotations

import ast
import enum
import math
import random
import struct
import sys
import time as time_mod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
import pytest

from noex_lab.core.errors import InvalidArgumentError, NoexError, RemoteError, SerializationError
from noex_lab.core.messages import Down, Exit
from noex_lab.core.node_id import NodeId
from noex_lab.core.reasons import ErrorReason
from noex_lab.core.refs import MonitorRef, ProcessRef
from noex_lab.distribution import codec as codec_mod
from noex_lab.distribution.codec import Codec, DecodeError, wire_type

LOCAL = NodeId("local", "127.0.0.1", 4369)
PEER = NodeId("peer", "10.0.0.2", 5000)
V6 = NodeId("six", "::1", 65535)


@pytest.fixture
def codec() -> Codec:
    return Codec(LOCAL)


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Tests register wire types; keep the process-wide registry as it was."""
    by_class = dict(codec_mod._BY_CLASS)
    by_name = dict(codec_mod._BY_NAME)
    yield
    codec_mod._BY_CLASS.clear()
    codec_mod._BY_CLASS.update(by_class)
    codec_mod._BY_NAME.clear()
    codec_mod._BY_NAME.update(by_name)


# ------------------------------------------------------------------------------------ comparison
def expected(value: Any, local: NodeId | None = LOCAL) -> Any:
    """What `value` should arrive as (bytearray -> bytes, exception -> RemoteError, ...)."""
    t = type(value)
    if t in (bytearray, memoryview):
        return bytes(value)
    if t in (ProcessRef, MonitorRef) and value.node is None:
        return t(local, value.id, value.creation)
    if isinstance(value, BaseException) and not isinstance(value, RemoteError):
        return RemoteError(type(value).__name__, str(value), "")
    return value


def assert_same(sent: Any, got: Any, path: str = "msg") -> None:
    """Equal value *and* exactly the expected type, recursively."""
    want = expected(sent)
    assert type(got) is type(want), f"{path}: {type(got)} is not {type(want)}"
    t = type(want)
    if t is float:
        if math.isnan(want):
            assert math.isnan(got), path
        else:
            assert got == want and math.copysign(1, got) == math.copysign(1, want), path
    elif t in (list, tuple):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif t is dict:
        assert len(got) == len(want), path
        for k, v in want.items():
            (k2,) = [k2 for k2 in got if k2 == k]
            assert_same(k, k2, f"{path}<key {k!r}>")
            assert_same(v, got[k2], f"{path}[{k!r}]")
    elif t in (set, frozenset):
        assert got == want, path
        rest = list(got)
        for item in want:
            match = [x for x in rest if x == item]
            assert match, path
            assert_same(item, match[0], f"{path}<{item!r}>")
            rest.remove(match[0])
    elif t is Decimal:
        assert str(got) == str(want), path
    elif t in (datetime, time):
        assert got.replace(tzinfo=None) == want.replace(tzinfo=None), path
        assert got.fold == want.fold, path
        assert got.utcoffset() == want.utcoffset(), path
        assert (got.tzinfo is None) == (want.tzinfo is None), path
    elif t is RemoteError:
        assert (got.exc_type, got.message) == (want.exc_type, want.message), path
        if isinstance(sent, RemoteError):
            assert got == sent, path
    elif t is Down:
        assert_same(want.monitor, got.monitor, f"{path}.monitor")
        assert_same(want.ref, got.ref, f"{path}.ref")
        assert_same(want.reason, got.reason, f"{path}.reason")
    elif t is Exit:
        assert_same(want.from_, got.from_, f"{path}.from_")
        assert_same(want.reason, got.reason, f"{path}.reason")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def roundtrip(codec: Codec, value: Any) -> Any:
    got = codec.decode(codec.encode(value))
    assert_same(value, got)
    return got


# ----------------------------------------------------------------------------- every wire value
class FixedTz(tzinfo):
    """A third-party-style tzinfo: sent as its fixed offset at that instant, with its name."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=5, minutes=45)

    def tzname(self, dt: datetime | None) -> str:
        return "NPT"

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


SCALARS: list[Any] = [
    None, True, False,
    0, 1, -1, 127, 128, -32, -33, 255, 256, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    2**64, -(2**63), -(2**63) - 1, 2**100, -(2**100), 10**300, -(2**1000) + 1,
    0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan,
    "", "get", "ünïcødé ✓ 🐍", "\x00", "\ud800 lone surrogate", "x" * 100_000,
    b"", b"\x00\xff", bytes(range(256)) * 100, bytearray(b"mutable"), memoryview(b"view"),
    date(1, 1, 1), date(9999, 12, 31), date(2024, 2, 29),
    time(0, 0), time(23, 59, 59, 999_999), time(12, 30, tzinfo=timezone(timedelta(hours=-3))),
    time(1, 2, 3, fold=1),
    timedelta(0), timedelta(days=-1), timedelta(days=3, seconds=7, microseconds=11), timedelta.max, timedelta.min,
    datetime(2024, 5, 17, 13, 45, 7, 123456), datetime.min, datetime.max,
    datetime(2024, 5, 17, tzinfo=UTC),
    datetime(2024, 5, 17, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2024, 5, 17, tzinfo=timezone(timedelta(hours=-9, seconds=-7, microseconds=-3))),
    datetime(2024, 5, 17, tzinfo=timezone(timedelta(hours=1), "Somewhere")),
    datetime(2024, 5, 17, tzinfo=FixedTz()),
    Decimal("0"), Decimal("-0"), Decimal("1.10"), Decimal("3.14159265358979323846264338327950288419716939937510"),
    Decimal("1E+999999"), Decimal("-1e-999999"), Decimal("NaN"), Decimal("-NaN"), Decimal("sNaN"),
    Decimal("NaN123"), Decimal("Infinity"), Decimal("-Infinity"),
    UUID(int=0), UUID("12345678-1234-5678-1234-567812345678"), UUID(int=2**128 - 1),
    LOCAL, PEER, V6, NodeId("n_-9", "host-name.example.org", 1),
    ProcessRef(PEER, 42, 3), ProcessRef(V6, 0), ProcessRef(PEER, 2**63 - 1, 2**63 - 1), ProcessRef(PEER, -5, -1),
    ProcessRef(None, 7), MonitorRef(PEER, 9, 1), MonitorRef(None, 10),
    ErrorReason("ValueError", "bad", "Traceback ..."), ErrorReason("E", ""),
    RemoteError("KeyError", "'k'", "Traceback (most recent call last): ..."),
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: f"{type(v).__name__}:{repr(v)[:30]}")
def test_scalar_round_trips_with_exact_type(codec: Codec, value: Any) -> None:
    roundtrip(codec, value)


ZONE_CASES = [
    datetime(2024, 1, 15, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2024, 7, 15, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2021, 10, 31, 2, 30, fold=0, tzinfo=ZoneInfo("Europe/Paris")),  # ambiguous: CEST
    datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),  # ambiguous: CET
    datetime(2024, 3, 10, 1, 30, tzinfo=ZoneInfo("America/New_York")),
    datetime(2024, 5, 1, tzinfo=ZoneInfo("Asia/Kathmandu")),
    datetime(2024, 5, 1, tzinfo=ZoneInfo("UTC")),
]


@pytest.mark.parametrize("value", ZONE_CASES, ids=str)
def test_zoneinfo_datetimes_keep_offset_and_zone(codec: Codec, value: datetime) -> None:
    got = roundtrip(codec, value)
    assert got == value
    assert got.utcoffset() == value.utcoffset()
    assert isinstance(got.tzinfo, ZoneInfo) and got.tzinfo.key == value.tzinfo.key  # type: ignore[union-attr]
    assert got.tzname() == value.tzname()


def test_unknown_zone_at_receiver_falls_back_to_the_exact_offset(codec: Codec) -> None:
    head = struct.pack(">HBBBBBIB", 2024, 5, 1, 12, 0, 0, 0, 0)
    offset_us = (5 * 3600 + 17 * 60) * 1_000_000
    payload = head + struct.pack(">Bq", 3, offset_us) + b"Nowhere/Atlantis"
    got = codec.decode(msgpack.packb(msgpack.ExtType(6, payload)))
    assert type(got) is datetime
    assert got.utcoffset() == timedelta(hours=5, minutes=17)
    assert type(got.tzinfo) is timezone
    # A known zone whose offset disagrees (other tz database) also falls back to the offset.
    payload = head + struct.pack(">Bq", 3, offset_us) + b"Europe/Paris"
    got = codec.decode(msgpack.packb(msgpack.ExtType(6, payload)))
    assert got.utcoffset() == timedelta(hours=5, minutes=17) and type(got.tzinfo) is timezone


def test_tzinfo_without_offset_is_naive(codec: Codec) -> None:
    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> None:
            return None

        def tzname(self, dt: datetime | None) -> None:
            raise AssertionError("not needed for a naive value")

        def dst(self, dt: datetime | None) -> None:
            return None

    got = codec.decode(codec.encode(datetime(2024, 1, 1, 8, tzinfo=NoOffset())))
    assert got == datetime(2024, 1, 1, 8) and got.tzinfo is None
    got = codec.decode(codec.encode(time(8, tzinfo=ZoneInfo("Europe/Paris"))))
    assert got == time(8) and got.tzinfo is None


def test_named_timezone_keeps_its_name(codec: Codec) -> None:
    got = codec.decode(codec.encode(datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET"))))
    assert got.tzname() == "CET" and type(got.tzinfo) is timezone
    got = codec.decode(codec.encode(datetime(2024, 1, 1, tzinfo=UTC)))
    assert got.tzinfo is UTC


def test_bytearray_and_memoryview_arrive_as_bytes(codec: Codec) -> None:
    assert type(codec.decode(codec.encode(bytearray(b"ab")))) is bytes
    assert codec.decode(codec.encode([memoryview(b"xy")])) == [b"xy"]


def test_bool_stays_bool_and_int_stays_int(codec: Codec) -> None:
    got = codec.decode(codec.encode([True, 1, False, 0, {True: 1, 0: False}]))
    assert [type(x) for x in got[:4]] == [bool, int, bool, int]
    assert [(type(k), type(v)) for k, v in got[4].items()] == [(bool, int), (int, bool)]


# ----------------------------------------------------------------------------------- containers
CONTAINERS: list[Any] = [
    [], (), {}, set(), frozenset(), [[]], ((),), [()], ([],),
    (1, "a", None), [1, (2, (3, (4, [5, (6,)])))], ((1, 2), [3, 4], {"k": (5,)}),
    {(1, 2): "tuple key", (): "empty tuple key", ((1,), ("x", None)): "nested tuple key"},
    {frozenset({1, 2}): 1, None: 2, 3: 3, -4: 4, 1.5: 5, b"raw": 6, "s": 7, True: 8},
    {(1, frozenset({(2, 3)})): {"inner": [(), set()]}},
    {1, 2, "three", (4, 5), frozenset({6}), None, b"7", 8.5},
    frozenset({(1, 2), frozenset({3}), "x"}),
    {UUID(int=1): date(2020, 1, 1), Decimal("1.5"): timedelta(1), LOCAL: ProcessRef(PEER, 1)},
    {datetime(2020, 1, 1, tzinfo=UTC): 1, ProcessRef(PEER, 1): MonitorRef(PEER, 2)},
    [0, 17, 3, "get"], {f"key{i}": i for i in range(10)},
    [1, 42, 7, 0, ProcessRef(PEER, 9, 1), ("get", "k")],
    Down(MonitorRef(PEER, 1), ProcessRef(PEER, 2), "normal"),
    Down(MonitorRef(None, 1), ProcessRef(None, 2), ErrorReason("RuntimeError", "x", "tb")),
    Exit(ProcessRef(PEER, 3), "killed"),
    Exit(ProcessRef(PEER, 3), ("shutdown", {"why": [1, (2,)]})),
    [Down(MonitorRef(PEER, 1), ProcessRef(PEER, 2), ("noconnection", PEER))] * 3,
    list(range(1000)), tuple(range(1000)), {str(i): (i, [i]) for i in range(300)}, set(range(500)),
]


@pytest.mark.parametrize("value", CONTAINERS, ids=lambda v: f"{type(v).__name__}:{repr(v)[:40]}")
def test_container_round_trips_with_exact_types(codec: Codec, value: Any) -> None:
    roundtrip(codec, value)


def test_tuples_stay_tuples_everywhere(codec: Codec) -> None:
    got = codec.decode(codec.encode({"a": [(1, (2,))], (3, (4,)): {(5,)}}))
    assert type(got["a"][0]) is tuple and type(got["a"][0][1]) is tuple
    (key,) = [k for k in got if k != "a"]
    assert type(key) is tuple and type(key[1]) is tuple
    (element,) = got[key]
    assert type(element) is tuple


def test_native_messages_are_plain_msgpack(codec: Codec) -> None:
    """The fast path: messages of native types are byte-identical to msgpack's own encoding."""
    for msg in ([0, 17, 3, "get"], {"a": [1, 2.5, None, True, b"x"]}, {1: {2: "x"}}, "s", None):
        assert codec.encode(msg) == msgpack.packb(msg)
        assert codec.decode(msgpack.packb(msg)) == msg


def test_a_message_with_containers_is_wrapped_once(codec: Codec) -> None:
    data = codec.encode([("a",), [(1,)]])
    assert data[0] == 0xC7 and data[2] == 0  # ext8, code 0 (WRAPPED), at the top only
    big = codec.encode([(i,) for i in range(10_000)])
    assert big[0] == 0xC9 and big[5] == 0
    assert codec.decode(big) == [(i,) for i in range(10_000)]


def test_deep_nesting_up_to_the_limit_round_trips(codec: Codec) -> None:
    value: Any = "leaf"
    for i in range(1000):
        value = (value,) if i % 2 else [value]
    got = codec.decode(codec.encode(value))
    for i in range(1000):
        assert type(got) is (tuple if (999 - i) % 2 else list)
        got = got[0]
    assert got == "leaf"


# -------------------------------------------------------------------------------- refs and nodes
def test_a_ref_without_node_gets_the_local_node() -> None:
    codec = Codec(LOCAL)
    assert codec.decode(codec.encode(ProcessRef(None, 5, 2))) == ProcessRef(LOCAL, 5, 2)
    assert codec.decode(codec.encode(MonitorRef(None, 6))) == MonitorRef(LOCAL, 6)
    assert codec.decode(codec.encode(ProcessRef(PEER, 5))) == ProcessRef(PEER, 5)


def test_a_codec_without_local_node_keeps_node_none() -> None:
    codec = Codec()
    assert codec.local_node is None
    got = codec.decode(codec.encode([ProcessRef(None, 5), MonitorRef(None, 1)]))
    assert got == [ProcessRef(None, 5), MonitorRef(None, 1)]


def test_ref_and_node_id_types_are_exact(codec: Codec) -> None:
    got = codec.decode(codec.encode([ProcessRef(PEER, 1), MonitorRef(PEER, 1), PEER]))
    assert [type(x) for x in got] == [ProcessRef, MonitorRef, NodeId]
    assert got[0] != got[1]


def test_refs_are_decoded_from_identical_payloads_consistently(codec: Codec) -> None:
    ref = ProcessRef(PEER, 12, 4)
    first = codec.decode(codec.encode(ref))
    second = codec.decode(codec.encode(ProcessRef(PEER, 12, 4)))
    assert first == second == ref and hash(first) == hash(ref)
    other = Codec(PEER)
    assert other.decode(codec.encode(ProcessRef(None, 12, 4))) == ProcessRef(LOCAL, 12, 4)


def test_out_of_range_ref_id_is_a_serialization_error(codec: Codec) -> None:
    with pytest.raises(SerializationError, match=r"msg\[1\]: cannot send .*ProcessRef"):
        codec.encode([1, ProcessRef(PEER, 2**64)])


# ------------------------------------------------------------------------------------ exceptions
def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


class CustomError(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad value"), _raised(KeyError("k")), _raised(CustomError("custom", 1)),
     KeyboardInterrupt(), _raised(SerializationError("nested noex error")), ZeroDivisionError()],
    ids=lambda e: type(e).__name__,
)
def test_exceptions_arrive_as_remote_error(codec: Codec, exc: BaseException) -> None:
    got = codec.decode(codec.encode({"error": exc}))["error"]
    assert type(got) is RemoteError
    assert got.exc_type == type(exc).__name__
    assert got.message == str(exc)
    assert type(exc).__name__ in got.traceback
    if exc.__traceback__ is not None:
        assert "_raised" in got.traceback


def test_remote_error_round_trips_equal(codec: Codec) -> None:
    err = RemoteError("CallError", "boom", "Traceback: line 1")
    got = codec.decode(codec.encode(err))
    assert got == err and type(got) is RemoteError and got.traceback == err.traceback
    assert str(got) == str(err)


def test_unprintable_exception_is_still_sent(codec: Codec) -> None:
    got = codec.decode(codec.encode(Unprintable()))
    assert type(got) is RemoteError and got.exc_type == "Unprintable" and "unprintable" in got.message


def test_exception_chain_is_in_the_traceback_text(codec: Codec) -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ValueError("outer") from inner
    except ValueError as exc:
        got = codec.decode(codec.encode(exc))
    assert "KeyError" in got.traceback and "ValueError: outer" in got.traceback


# ------------------------------------------------------------------------------------ wire types
@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass(slots=True)
class Order:
    id: int
    items: list[tuple[str, int]]
    tags: frozenset[str] = frozenset()
    owner: ProcessRef | None = None
    total: Decimal = Decimal(0)
    cached: int = field(default=0, init=False)


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Pair(NamedTuple):
    left: Any
    right: Any


class Money:
    """A plain class with explicit encode/decode."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    def __hash__(self) -> int:
        return hash((self.cents, self.currency))


def test_dataclass_wire_type_round_trips(codec: Codec) -> None:
    wire_type(Point)
    wire_type(Order)
    order = Order(7, [("apple", 2), ("pear", 1)], frozenset({"x"}), ProcessRef(PEER, 3), Decimal("9.99"))
    order.cached = 42
    got = codec.decode(codec.encode([Point(1, 2), {Point(3, 4): order}]))
    assert got[0] == Point(1, 2) and type(got[0]) is Point
    (key,) = got[1]
    assert type(key) is Point and key == Point(3, 4)
    value = got[1][key]
    assert type(value) is Order and value == order and value.cached == 42
    assert type(value.items[0]) is tuple and type(value.tags) is frozenset


def test_wire_type_decorator_forms(codec: Codec) -> None:
    @wire_type
    @dataclass
    class Bare:
        a: int

    @wire_type(name="tests.renamed")
    @dataclass
    class Named:
        b: tuple[int, ...]

    assert codec_mod._BY_CLASS[Bare].name == f"{__name__}.test_wire_type_decorator_forms.<locals>.Bare"
    assert codec_mod._BY_NAME["tests.renamed"].cls is Named
    assert codec.decode(codec.encode((Bare(1), Named((2,))))) == (Bare(1), Named((2,)))


def test_custom_encode_decode(codec: Codec) -> None:
    wire_type(Money, name="money", encode=lambda m: (m.cents, m.currency), decode=lambda s: Money(*s))
    got = codec.decode(codec.encode({Money(150, "EUR"): [Money(1, "USD")]}))
    ((key, value),) = got.items()
    assert type(key) is Money and key == Money(150, "EUR") and value == [Money(1, "USD")]


def test_enum_and_namedtuple_wire_types(codec: Codec) -> None:
    wire_type(Color)
    wire_type(Level)
    wire_type(Pair)
    got = codec.decode(codec.encode([Color.GREEN, Level.HIGH, Pair(1, (2,)), {Color.RED: Level.LOW}]))
    assert got == [Color.GREEN, Level.HIGH, Pair(1, (2,)), {Color.RED: Level.LOW}]
    assert type(got[1]) is Level and type(got[2]) is Pair and type(got[2].right) is tuple


def test_reregistering_a_name_replaces_the_class(codec: Codec) -> None:
    @wire_type(name="cell.Thing")
    @dataclass
    class Thing:
        a: int

    old = Thing

    @wire_type(name="cell.Thing")  # the notebook cell was run again
    @dataclass
    class Thing:  # type: ignore[no-redef]
        a: int
        b: int = 0

    got = codec.decode(codec.encode(Thing(1, 2)))  # type: ignore[call-arg]
    assert type(got) is Thing and got == Thing(1, 2)  # type: ignore[call-arg]
    # Instances of the old class still encode, and arrive as the current class.
    got = codec.decode(codec.encode(old(5)))
    assert type(got) is Thing and got == Thing(5)


def test_unknown_wire_type_name_is_a_decode_error(codec: Codec) -> None:
    @wire_type(name="only.on.sender")
    @dataclass
    class Local:
        a: int

    data = codec.encode([Local(1)])
    del codec_mod._BY_NAME["only.on.sender"]
    with pytest.raises(DecodeError, match=r"unknown wire type 'only\.on\.sender'"):
        codec.decode(data)


def test_wire_type_decode_failures_are_decode_errors(codec: Codec) -> None:
    def boom(state: Any) -> Any:
        raise ValueError("refused")

    class Odd:
        pass

    wire_type(Odd, name="odd", encode=lambda o: 1, decode=boom)
    with pytest.raises(DecodeError, match="refused"):
        codec.decode(codec.encode(Odd()))
    wire_type(Point, name="point")
    for state in ([1, 2], {"x": 1, "y": 2, "z": 3}, {"x": 1}, {1: 2}):
        body = msgpack.packb([msgpack.ExtType(23, b"point"), state])
        data = bytes([0xC7, len(body), 0]) + body
        with pytest.raises(DecodeError):
            codec.decode(data)


def test_wire_type_encode_failure_names_the_place(codec: Codec) -> None:
    class Fragile:
        pass

    def bad(obj: Any) -> Any:
        raise RuntimeError("cannot")

    wire_type(Fragile, name="fragile", encode=bad, decode=lambda s: Fragile())
    with pytest.raises(SerializationError, match=r"msg\['f'\]: cannot send .*Fragile.*RuntimeError"):
        codec.encode({"f": Fragile()})


def test_dataclass_field_that_cannot_travel_names_the_field(codec: Codec) -> None:
    wire_type(Point)

    @wire_type
    @dataclass
    class Holder:
        point: Point
        thing: Any

    with pytest.raises(SerializationError, match=r"^msg\[0\]\.thing\[1\]: cannot send <class 'object'>"):
        codec.encode([Holder(Point(1, 2), [1, object()])])


def test_wire_type_refuses_bad_registrations() -> None:
    class Plain:
        pass

    with pytest.raises(InvalidArgumentError, match="encode= and decode="):
        wire_type(Plain)
    with pytest.raises(InvalidArgumentError, match="both"):
        wire_type(Plain, encode=lambda p: 1)
    for builtin in (int, tuple, dict, ProcessRef, datetime, RemoteError):
        with pytest.raises(InvalidArgumentError, match="already a wire value"):
            wire_type(builtin, encode=lambda v: v, decode=lambda v: v)
    with pytest.raises(InvalidArgumentError):
        wire_type(Point, name="")
    with pytest.raises(InvalidArgumentError, match="not a class"):
        wire_type(Point(1, 2))  # type: ignore[call-overload]
    assert issubclass(InvalidArgumentError, NoexError)


def test_registered_exception_class_round_trips_exactly(codec: Codec) -> None:
    wire_type(CustomError, name="custom-error", encode=lambda e: list(e.args), decode=lambda a: CustomError(*a))
    got = codec.decode(codec.encode(CustomError("x", 2)))
    assert type(got) is CustomError and got.args == ("x", 2)


# ----------------------------------------------------------------------------- unsupported values
class Foo:
    pass


def _gen() -> Iterator[int]:
    yield 1


UNSUPPORTED: list[Any] = [
    Foo(), object(), lambda: 1, len, Foo, int, sys, _gen(), Point(1, 2), Foo.__init__,
    OrderedDict(a=1), Level.LOW, Color.RED, Pair(1, 2), msgpack, range(3), 1j, ...,
    NotImplemented, iter([1]), slice(1), struct.Struct(">I"), Path("/tmp"),
]


@pytest.mark.parametrize("bad", UNSUPPORTED, ids=lambda v: type(v).__name__)
def test_unsupported_values_raise_in_the_sender(codec: Codec, bad: Any) -> None:
    with pytest.raises(SerializationError, match=r"cannot send"):
        codec.encode([1, {"k": bad}])
    assert codec.decode(codec.encode([1, {"k": 2}])) == [1, {"k": 2}]  # the codec still works


def test_serialization_error_names_type_and_place(codec: Codec) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode([0, 1, {"x": Foo()}])
    assert str(info.value) == (
        f"msg[2]['x']: cannot send {Foo!r}; decorate it with noex_lab.wire_type"
    )
    assert isinstance(info.value, NoexError)
    assert codec.encode([0, 1, {"x": 1}]) == msgpack.packb([0, 1, {"x": 1}])


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (Foo(), "msg"),
        ((1, (2, Foo())), r"msg\[1\]\[1\]"),
        ({"a": {Foo()}}, r"msg\['a'\]<element #0>"),
        ({(1, Foo()): 2}, r"msg<key #0>\[1\]"),
        ([Down(MonitorRef(PEER, 1), ProcessRef(PEER, 1), Foo())], r"msg\[0\]\.reason"),
        (Exit(ProcessRef(PEER, 1), [Foo()]), r"msg\.reason\[0\]"),
    ],
)
def test_error_path(codec: Codec, value: Any, where: str) -> None:
    with pytest.raises(SerializationError, match=rf"^{where}: cannot send"):
        codec.encode(value)


def test_code_and_subclass_hints(codec: Codec) -> None:
    with pytest.raises(SerializationError, match="never travel"):
        codec.encode(print)
    with pytest.raises(SerializationError, match="subclass of dict: convert it to a plain dict"):
        codec.encode(OrderedDict())
    with pytest.raises(SerializationError, match="subclass of int"):
        codec.encode(Level.LOW)


def test_malformed_core_values_are_refused_in_the_sender(codec: Codec) -> None:
    with pytest.raises(SerializationError, match="Down needs"):
        codec.encode(Down(None, ProcessRef(PEER, 1), "normal"))  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match=r"Exit\.from_"):
        codec.encode(Exit("nobody", "normal"))  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="ErrorReason fields"):
        codec.encode(ErrorReason("E", None))  # type: ignore[arg-type]


def test_cycles_and_too_deep_nesting_are_serialization_errors(codec: Codec) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(SerializationError, match="deeper than 1024"):
        codec.encode(loop)
    deep: Any = 0
    for _ in range(1100):
        deep = (deep,)
    with pytest.raises(SerializationError, match="deeper than 1024"):
        codec.encode(deep)
    assert codec.decode(codec.encode((1,))) == (1,)


def test_oversize_message_is_a_serialization_error() -> None:
    codec = Codec(LOCAL, max_bytes=1000)
    assert len(codec.encode(b"x" * 997)) == 1000  # bin16 header: exactly at the limit
    with pytest.raises(SerializationError, match="more than the limit of 1000"):
        codec.encode(b"x" * 1000)
    with pytest.raises(SerializationError, match="max_message_bytes"):
        codec.encode([(i,) for i in range(500)])
    assert codec.decode(codec.encode("fine")) == "fine"


def test_max_bytes_must_fit_a_frame() -> None:
    for bad in (0, -1, 2**32, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            Codec(max_bytes=bad)  # type: ignore[arg-type]
    assert Codec(max_bytes=2**32 - 1).max_bytes == 2**32 - 1


def test_oversize_input_is_a_decode_error() -> None:
    small = Codec(max_bytes=100)
    data = Codec().encode("y" * 200)
    for form in (data, bytearray(data), memoryview(data)):
        with pytest.raises(DecodeError, match="more than the limit of 100"):
            small.decode(form)


def test_decode_accepts_bytes_like_inputs(codec: Codec) -> None:
    data = codec.encode([(1, 2), "x"])
    for form in (data, bytearray(data), memoryview(data), memoryview(b"--" + data)[2:]):
        assert codec.decode(form) == [(1, 2), "x"]


# ------------------------------------------------------------------------------- hostile input
WIRE_TYPES = (
    type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, time,
    timedelta, Decimal, UUID, ProcessRef, MonitorRef, NodeId, Down, Exit, ErrorReason, RemoteError,
)


def assert_wire_value(value: Any, depth: int = 0) -> None:
    """Whatever decode returns is built only from wire types (no stray markers or msgpack objects)."""
    t = type(value)
    assert t in WIRE_TYPES or t in codec_mod._BY_CLASS, f"decoded a {t}"
    if depth > 1100:
        return
    if t in (list, tuple, set, frozenset):
        for item in value:
            assert_wire_value(item, depth + 1)
    elif t is dict:
        for k, v in value.items():
            assert_wire_value(k, depth + 1)
            assert_wire_value(v, depth + 1)
    elif t is Down:
        assert type(value.monitor) is MonitorRef and type(value.ref) is ProcessRef
        assert_wire_value(value.reason, depth + 1)
    elif t is Exit:
        assert type(value.from_) is ProcessRef
        assert_wire_value(value.reason, depth + 1)


def decode_or_error(codec: Codec, data: bytes) -> None:
    try:
        value = codec.decode(data)
    except DecodeError:
        return
    assert_wire_value(value)


def test_random_bytes_fuzz(codec: Codec) -> None:
    rng = random.Random(20240517)
    started = time_mod.perf_counter()
    for _ in range(5000):
        size = rng.choice((rng.randint(0, 8), rng.randint(0, 64), rng.randint(0, 512)))
        data = rng.randbytes(size)
        decode_or_error(codec, data)
        # Also inside a WRAPPED ext, so the slow path (markers, list hook) gets fuzzed too.
        decode_or_error(codec, bytes([0xC9]) + struct.pack(">I", len(data)) + b"\x00" + data)
    assert time_mod.perf_counter() - started < 30


def corpus() -> list[Any]:
    wire_type(Point)
    return [*SCALARS[:40], *CONTAINERS[:25], [Point(1, 2), (Point(3, 4),)], ZONE_CASES[3]]


def test_every_truncation_is_a_decode_error(codec: Codec) -> None:
    for value in corpus():
        data = codec.encode(value)
        for cut in range(len(data) - 1, -1, -max(1, len(data) // 64)):
            with pytest.raises(DecodeError):
                codec.decode(data[:cut])


def test_bit_flips_and_byte_edits_of_valid_messages(codec: Codec) -> None:
    rng = random.Random(7)
    for value in corpus():
        data = bytearray(codec.encode(value))
        if len(data) > 4096:
            continue
        for _ in range(60):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(mutated))
                if rng.random() < 0.5:
                    mutated[i] ^= 1 << rng.randrange(8)
                else:
                    mutated[i] = rng.randrange(256)
            decode_or_error(codec, bytes(mutated))


@pytest.mark.parametrize(
    "data",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
        b"\xdf\xff\xff\xff\xff\x00",  # map32
        b"\xc6\xff\xff\xff\xff\x00",  # bin32 of 4 GiB
        b"\xdb\xff\xff\xff\xff\x00",  # str32
        b"\xc9\xff\xff\xff\xff\x00",  # ext32 WRAPPED of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",  # ext32 BIGINT of 4 GiB
        b"\x91" * 100_000,  # 100000 nested arrays, no leaf
        b"\x91" * 1100 + b"\x00",  # deeper than msgpack's 1024-level stack
        b"\x81" * 5000 + b"\x00",  # nested maps
        b"\xc7\x00\x00",  # empty WRAPPED
        b"",
        b"\xc1",  # never-used byte
        b"\x93\x01\x02",  # array of 3 with 2 items
        b"\x01\x02",  # extra data after a complete value
        b"\xa3ab",  # truncated str
        b"\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\x91\x01\x02",  # a list as a map key (unhashable)
    ],
    ids=repr,
)
def test_malformed_frames_fail_fast_without_big_allocations(codec: Codec, data: bytes) -> None:
    started = time_mod.perf_counter()
    with pytest.raises(DecodeError):
        codec.decode(data)
    assert time_mod.perf_counter() - started < 1.0


def wrapped(*items: Any) -> bytes:
    body = msgpack.packb(list(items) if len(items) != 1 else items[0])
    return bytes(msgpack.packb(msgpack.ExtType(0, body)))


def raw_ext(code: int, payload: bytes) -> bytes:
    """An ext8 frame by hand (msgpack.ExtType refuses negative codes)."""
    return bytes([0xC7, len(payload), code & 0xFF]) + payload


def marker(code: int, payload: bytes = b"") -> msgpack.ExtType:
    return msgpack.ExtType(code, payload)


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb([marker(16), 1, 2]),  # a tuple marker outside a WRAPPED message
        msgpack.packb(marker(16)),
        wrapped(marker(16)),  # a bare marker at the top
        wrapped([1, marker(16)]),  # a marker not first in its array
        wrapped({"k": marker(17)}),  # a marker as a map value
        msgpack.packb(msgpack.ExtType(0, msgpack.packb({marker(16): 1}))),  # as a map key
        wrapped([marker(16), marker(16)]),
        wrapped([marker(16, b"x"), 1]),  # a marker with a payload
        wrapped([marker(99)]),
        msgpack.packb(msgpack.ExtType(0, wrapped([marker(16), 1]))),  # WRAPPED inside WRAPPED
        wrapped([marker(17), [1]]),  # unhashable set element
        wrapped([marker(16), marker(17)], 1),
        wrapped([marker(19), 1, 2, 3]),  # Down with wrong field types
        wrapped([marker(19), 1]),  # Down with too few fields
        wrapped([marker(20), "not a ref", "normal"]),
        wrapped([marker(21), 1, 2, 3]),  # ErrorReason with non-str fields
        wrapped([marker(22), "E", "m"]),
        wrapped([marker(23, b"no.such.type"), 1]),
        wrapped([marker(23, b"\xff\xfe"), 1]),
    ],
    ids=repr,
)
def test_misplaced_and_malformed_markers(codec: Codec, data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


@pytest.mark.parametrize(
    ("code", "payload"),
    [
        (2, b"not a number"), (2, b"\xff"), (3, b"\x00" * 15), (3, b"\x00" * 17), (4, b"\x00\x00\x00\x00"),
        (4, b"\x00\x00"), (4, b"\xff\xff\xff\xff"), (5, b"\x00" * 11), (5, b"\x7f\xff\xff\xff" + b"\x00" * 8),
        (6, b"\x00" * 5), (6, struct.pack(">HBBBBBIB", 2024, 13, 1, 0, 0, 0, 0, 0)),
        (6, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + b"\x09" + b"\x00" * 8),
        (6, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + struct.pack(">Bq", 1, 86400 * 10**6)),
        (6, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + struct.pack(">Bq", 1, 0) + b"junk"),
        (6, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 0) + b"\x01\x00"),
        (6, struct.pack(">HBBBBBIB", 2024, 1, 1, 0, 0, 0, 0, 2)),
        (7, struct.pack(">BBBIB", 24, 0, 0, 0, 0)), (7, b""),
        (8, b""), (8, b"\x00\x10\x05ab"), (8, b"\x00\x10\x01a"), (8, b"\x00\x00\x01a" + b"host"),
        (8, b"\x00\x10\x01!" + b"host"), (8, b"\x00\x10\x01a" + b"bad host!"),
        (9, b"\x00" * 15), (9, b"\x00" * 16 + b"\x00"), (10, b"\x00" * 3),
        (11, b""), (15, b""), (16, b""), (23, b"x"), (24, b""), (127, b""), (-2, b""), (-128, b""),
        (-1, b"\x00" * 3),  # msgpack timestamp with a bad length
    ],
)
def test_malformed_ext_payloads(codec: Codec, code: int, payload: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(raw_ext(code, payload))


def test_junk_decimal_is_refused_even_without_traps(codec: Codec) -> None:
    import decimal

    with decimal.localcontext() as ctx:
        ctx.traps[decimal.InvalidOperation] = False
        assert Decimal("nonsense").is_nan()  # what Decimal() alone would accept
        for junk in (b"nonsense", b"1.2.3", b"NaNx"):
            with pytest.raises(DecodeError):
                codec.decode(raw_ext(2, junk))
        assert str(codec.decode(raw_ext(2, b"-sNaN12"))) == "-sNaN12"


def test_a_wire_type_decode_may_use_the_codec_reentrantly(codec: Codec) -> None:
    class Envelope:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    wire_type(
        Envelope, name="envelope",
        encode=lambda e: Codec(LOCAL).encode(e.inner),
        decode=lambda b: Envelope(codec.decode(b)),
    )
    got = codec.decode(codec.encode([(1,), Envelope([(2,), {3}]), (4,)]))
    assert got[0] == (1,) and got[1].inner == [(2,), {3}] and got[2] == (4,)
    with pytest.raises(DecodeError):  # a stray marker after the re-entrant decode is still caught
        codec.decode(wrapped([1, marker(16), [marker(23, b"envelope"), codec.encode((5,))]]))


def test_every_unknown_ext_code_is_a_decode_error(codec: Codec) -> None:
    known = {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
    for code in range(-128, 128):
        if code in known:
            continue
        for payload in (b"", b"\x00", b"\x00" * 16):
            with pytest.raises(DecodeError):
                codec.decode(raw_ext(code, payload))


def test_msgpack_timestamp_from_a_peer_is_a_utc_datetime(codec: Codec) -> None:
    got = codec.decode(msgpack.packb(msgpack.Timestamp(86400, 5000)))
    assert got == datetime(1970, 1, 2, 0, 0, 0, 5, tzinfo=UTC) and type(got) is datetime


def test_non_bytes_input_is_a_decode_error(codec: Codec) -> None:
    for bad in ("text", None, 12, [1]):
        with pytest.raises(DecodeError):
            codec.decode(bad)  # type: ignore[arg-type]


def test_decode_error_is_a_noex_error_and_keeps_the_cause(codec: Codec) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\x93\x01")
    assert isinstance(info.value, NoexError) and info.value.__cause__ is not None


def test_huge_bigint_and_decimal_payloads_stay_bounded() -> None:
    codec = Codec(max_bytes=2**20)
    big = 2 ** (8 * 500_000) - 1
    assert codec.decode(codec.encode(big)) == big
    data = msgpack.packb(msgpack.ExtType(2, b"9" * 900_000))
    assert codec.decode(data) == Decimal("9" * 900_000)


# ----------------------------------------------------------------------- random nested values
def random_hashable(rng: random.Random, depth: int) -> Any:
    kinds = ["none", "bool", "int", "big", "float", "str", "bytes", "date", "uuid", "ref", "node", "dec"]
    if depth < 3:
        kinds += ["tuple", "frozenset"]
    kind = rng.choice(kinds)
    if kind == "tuple":
        return tuple(random_hashable(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    if kind == "frozenset":
        return frozenset(random_hashable(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    return random_leaf(rng, kind)


def random_leaf(rng: random.Random, kind: str) -> Any:
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**64), 2**64)
    if kind == "big":
        return rng.randint(-(2**300), 2**300)
    if kind == "float":
        return rng.choice([rng.uniform(-1e9, 1e9), 0.0, -0.0, math.inf, 1e-310])
    if kind == "str":
        return "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0x80, 0xD7FF), 0x1F40D]))
                       for _ in range(rng.randint(0, 12)))
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 20))
    if kind == "date":
        return date.fromordinal(rng.randint(1, 3_652_059))
    if kind == "uuid":
        return UUID(int=rng.getrandbits(128))
    if kind == "ref":
        return rng.choice([ProcessRef, MonitorRef])(rng.choice([PEER, V6]), rng.randint(0, 2**40))
    if kind == "node":
        return rng.choice([LOCAL, PEER, V6])
    if kind == "dec":
        return Decimal(rng.randint(-(10**30), 10**30)).scaleb(rng.randint(-40, 40))
    if kind == "localref":
        return ProcessRef(None, rng.randint(0, 2**40))
    if kind == "nan":
        return math.nan
    if kind == "datetime":
        tz = rng.choice([None, UTC, timezone(timedelta(minutes=rng.randint(-1439, 1439))),
                         ZoneInfo("Europe/Paris"), ZoneInfo("America/Los_Angeles")])
        return datetime(rng.randint(1900, 2100), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                        rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999), tzinfo=tz,
                        fold=rng.randint(0, 1))
    if kind == "timedelta":
        return timedelta(microseconds=rng.randint(-(10**15), 10**15))
    if kind == "time":
        return time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999))
    if kind == "error":
        return rng.choice([ValueError("v"), ErrorReason("T", "m", "tb"), RemoteError("R", "m", "t")])
    raise AssertionError(kind)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "big", "float", "nan", "str", "bytes", "date", "uuid", "ref", "localref", "node",
             "dec", "datetime", "timedelta", "time", "error"]
    if depth < 5:
        kinds += ["list", "tuple", "dict", "set", "frozenset", "down", "exit", "point"] * 2
    kind = rng.choice(kinds)
    n = rng.randint(0, 5)
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(n)]
    if kind == "tuple":
        return tuple(random_value(rng, depth + 1) for _ in range(n))
    if kind == "dict":
        return {random_hashable(rng, depth + 1): random_value(rng, depth + 1) for _ in range(n)}
    if kind == "set":
        return {random_hashable(rng, depth + 1) for _ in range(n)}
    if kind == "frozenset":
        return frozenset(random_hashable(rng, depth + 1) for _ in range(n))
    if kind == "down":
        return Down(MonitorRef(PEER, n), ProcessRef(None, n), random_value(rng, depth + 1))
    if kind == "exit":
        return Exit(ProcessRef(V6, n), random_value(rng, depth + 1))
    if kind == "point":
        return Point(random_hashable(rng, depth + 1), random_hashable(rng, depth + 1))
    return random_leaf(rng, kind)


def test_random_nested_values_round_trip_exactly(codec: Codec) -> None:
    wire_type(Point)
    rng = random.Random(1234)
    for _ in range(600):
        value = random_value(rng)
        roundtrip(codec, value)


# -------------------------------------------------------------------- hash flooding (issue 12)
HASH_P = 2**61 - 1  # k and k + HASH_P hash alike


def colliding_ints(count: int, base: int = 7) -> list[int]:
    return [base + k * HASH_P for k in range(count)]


def raw_map(keys: list[bytes]) -> bytes:
    """A msgpack map of already encoded keys, each to 0 (built by hand: building the dict in
    this process would take the quadratic time under test)."""
    return b"\xdf" + len(keys).to_bytes(4, "big") + b"".join(key + b"\x00" for key in keys)


@pytest.mark.parametrize("count", [33, 20_000])
def test_a_dict_with_many_keys_of_one_hash_is_refused_in_linear_time(codec: Codec, count: int) -> None:
    data = raw_map([codec.encode(k) for k in colliding_ints(count)])
    started = time_mod.process_time()
    with pytest.raises(DecodeError, match="share a hash value"):
        codec.decode(data)
    with pytest.raises(DecodeError, match="share a hash value"):  # inside a message with containers too
        codec.decode(b"\xc9" + (len(data) + 6).to_bytes(4, "big") + b"\x00\x92\x92\xc7\x00\x10\x01" + data)
    assert time_mod.process_time() - started < 0.5


def test_sets_and_frozensets_with_many_elements_of_one_hash_are_refused(codec: Codec) -> None:
    for kind in (set, frozenset):
        members = b"".join(codec.encode(k) for k in colliding_ints(5_000))
        code = 17 if kind is set else 18
        payload = b"\xdd" + (5_001).to_bytes(4, "big") + bytes([0xC7, 0, code]) + members
        data = b"\xc9" + len(payload).to_bytes(4, "big") + b"\x00" + payload
        started = time_mod.process_time()
        with pytest.raises(DecodeError, match="share a hash value"):
            codec.decode(data)
        assert time_mod.process_time() - started < 0.5


def test_a_few_keys_of_one_hash_and_big_dicts_and_sets_still_round_trip(codec: Codec) -> None:
    few = {k: i for i, k in enumerate(colliding_ints(8))} | {i: i for i in range(100)}  # 8 alike: allowed
    small = {k: 0 for k in colliding_ints(32)}  # a small map is left to msgpack
    values = [
        few, small, set(few), frozenset(few), {-1: "a", -2: "b"} | {i: i for i in range(50)},
        {f"key{i}": [i, (i,)] for i in range(5000)}, {(i, str(i)): {i} for i in range(2000)},
        [{i: i for i in range(40)} for _ in range(50)], {float(i) / 3: i for i in range(1000)},
    ]
    for value in values:
        assert codec.decode(codec.encode(value)) == value
        assert codec.decode(codec.encode([value, (1,)])) == [value, (1,)]


def test_messages_of_small_colliding_maps_cost_a_bounded_time_per_key(codec: Codec) -> None:
    maps = b"".join(raw_map([codec.encode(k) for k in colliding_ints(32, base)]) for base in range(2_000))
    data = b"\xdd" + (2_000).to_bytes(4, "big") + maps  # ~900 KiB
    started = time_mod.process_time()
    assert len(codec.decode(data)) == 2_000
    assert time_mod.process_time() - started < 1.0


# ----------------------------------------------------------------------- incremental decoding
def decode_incrementally(codec: Codec, data: bytes, slice_bytes: int) -> list[Any]:
    decoder = codec.incremental(data, slice_bytes)
    out: list[Any] = []
    for _ in range(len(data) + 10):
        if decoder.done:
            return out
        out.extend(decoder.step())
    raise AssertionError("the decoder made no progress")


def test_incremental_decoding_gives_what_decode_gives_whatever_the_slices(codec: Codec) -> None:
    wire_type(Point)
    rng = random.Random(99)
    for _ in range(150):
        messages = [[rng.randint(1, 16), random_value(rng)] for _ in range(rng.randint(1, 4))]
        data = b"".join(codec.encode(m) for m in messages)
        for slice_bytes in (1, 7, 64, 1 << 20):
            assert_same(messages, decode_incrementally(codec, data, slice_bytes))


def test_incremental_decoding_checks_big_maps_and_refuses_floods(codec: Codec) -> None:
    big = {f"k{i}": i for i in range(100)}
    data = codec.encode([3, big]) + codec.encode([3, (1,), big])
    assert decode_incrementally(codec, data, 10) == [[3, big], [3, (1,), big]]
    flood = raw_map([codec.encode(k) for k in colliding_ints(1_000)])
    decoder = codec.incremental(b"\x92\x03" + flood + codec.encode([4, "after"]), 4096)
    with pytest.raises(DecodeError, match="share a hash value"):
        for _ in range(100):
            decoder.step()
    assert decoder.position == 0 and decoder.skip()  # passed over: the next message decodes
    assert decode_steps(decoder) == [[4, "after"]]


def decode_steps(decoder: codec_mod.IncrementalDecoder) -> list[Any]:
    out: list[Any] = []
    for _ in range(1000):
        if decoder.done:
            return out
        out.extend(decoder.step())
    raise AssertionError("no end")


@pytest.mark.parametrize(
    "data",
    [
        b"\x93\x01\x02",  # ends inside a message
        msgpack.packb([1, msgpack.ExtType(0, msgpack.packb([1]))]),  # a WRAPPED ext inside a message
        b"\xc7\x05\x00\x92\x01",  # a WRAPPED payload cut short
        msgpack.packb(msgpack.ExtType(0, msgpack.packb({"not": "a list"}))),
        msgpack.packb(msgpack.ExtType(0, b"\x91\x01\x02")),  # extra bytes in the payload
    ],
    ids=repr,
)
def test_incremental_decoding_refuses_what_is_not_messages(codec: Codec, data: bytes) -> None:
    decoder = codec.incremental(data, 3)
    with pytest.raises(DecodeError):
        for _ in range(100):
            decoder.step()


def test_skim_and_message_head_read_without_decoding(codec: Codec) -> None:
    first = codec.encode([1, 42, 7, 1, None, ("x", {1})])  # a WRAPPED call
    second = codec.encode([3, 2**40, 1, "y"])
    data = first + second
    assert codec_mod.skim(data, 0) == (0, len(first))
    assert codec_mod.skim(data, 0, 1) == (len(first), len(data))
    assert codec_mod.skim(data, 0, 2) is None and codec_mod.skim(data[:-1], len(first)) is None
    assert codec_mod.message_head(data, 0) == (1, 42)
    assert codec_mod.message_head(data, len(first)) == (3, 2**40)
    for not_a_message in (msgpack.packb("text"), msgpack.packb(["x", 1]), b"\x91", b"\xdc\x00", b""):
        assert codec_mod.message_head(not_a_message, 0) is None
    assert codec_mod.message_head(msgpack.packb([-5, -300]), 0) == (-5, -300)
    assert codec_mod.message_head(msgpack.packb([7, "no id"]), 0) == (7, None)


# ------------------------------------------------------------------------------------- hygiene
FORBIDDEN = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "jsonpickle", "copyreg"}


def test_no_pickle_anywhere_in_the_package() -> None:
    root = Path(codec_mod.__file__).resolve().parents[1]
    offenders = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            offenders += [f"{path}:{getattr(node, 'lineno', 0)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_codec_module_runs_no_dynamic_code() -> None:
    source = Path(codec_mod.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__", "getattr_static"}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imports & {"marshal", "importlib", "pickle"}


def test_a_big_message_of_tiny_containers_is_refused_and_real_data_is_not() -> None:
    """Above one array or map per CONTAINER_BYTES, a big message is refused (freeing a million
    containers and the collector's passes over them would hold the loop in one piece)."""
    from noex_lab.distribution.codec import CONTAINER_BYTES, DecodeError

    codec = Codec()
    tiny = codec.encode([[] for _ in range(2**20)])
    assert len(tiny) // (2**20) < CONTAINER_BYTES
    decoder = codec.incremental(tiny, 64 * 1024)
    with pytest.raises(DecodeError, match="arrays and maps"):
        for _ in range(1000):
            decoder.step()
            if decoder.done:
                break
    pairs = [[i % 100, (i * 7) % 100] for i in range(300_000)]  # small pairs: 3 bytes each
    dicts = [{"id": i} for i in range(50_000)]
    for value in (pairs, dicts):
        data = codec.encode(value)
        decoder = codec.incremental(data, 64 * 1024)
        got = []
        for _ in range(10_000):
            got.extend(decoder.step())
            if decoder.done:
                break
        assert got == [value]

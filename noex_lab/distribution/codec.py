"""The wire codec: exact-type msgpack encoding of the values that may cross nodes
(a value of any other type is refused with SerializationError, never pickled).

Why it is built this way:

- Native msgpack values (None, bool, 64-bit int, float, str, bytes, list, dict) cost one
  `Packer.pack` / `unpackb` call: no Python code runs per value on the hot path.
- Leaf values msgpack lacks (big ints, Decimal, UUID, dates and times, NodeId, ProcessRef,
  MonitorRef) are ext types with a raw-bytes payload, decoded directly by the ext hook, so a
  message carrying refs stays on the fast path.
- Containers msgpack lacks (tuple, set, frozenset, Down, Exit, ErrorReason, exceptions, wire
  types) are msgpack arrays whose first item is an empty "marker" ext. A message holding any is
  wrapped in one top-level WRAPPED ext, so only such messages pay for a per-array `list_hook`.
  Nesting stays inside a single msgpack call: decoding never recurses in Python or on the C
  stack, and msgpack's fixed 1024-level stack caps the depth identically when encoding
  (SerializationError) and decoding (DecodeError), so whatever encodes also decodes.
- Never pickle: decoding only builds the types listed below and explicitly registered wire
  types, so a message cannot make the receiver run code it did not opt into.
- Decoding costs time linear in the input, whatever a peer puts in it. Hash flooding: `str`
  and `bytes` hashes are randomized, but a peer can craft many distinct ints (k, k + 2**61 - 1),
  floats, Decimals, tuples, frozensets, ... with one hash, and building a dict or set of n of
  them takes n**2 / 2 probes. So msgpack builds maps of at most `_SMALL_MAP` (32) entries
  itself (a bounded cost per key, whatever the keys); a bigger map (`max_map_len` makes msgpack
  refuse it, and the message is decoded again with `object_pairs_hook`) and any set of more
  than 32 elements are checked first, and refused (DecodeError) when more than `_SAME_HASH` (8)
  keys share a hash value. Counting hash values is linear: they are ints, and ints below
  2**61 - 1 hash to themselves. `IncrementalDecoder` decodes a big input a slice per step, so
  a caller can spread it over several turns of its event loop.

Ext codes (payloads are big-endian):

    0  WRAPPED       top level only: a message that contains container markers
    1  BIGINT        int outside int64/uint64: signed two's-complement bytes
    2  DECIMAL       ASCII str(d) (NaN, sNaN, Infinity and -0 included)
    3  UUID          the 16 bytes
    4  DATE          u32 proleptic ordinal
    5  TIMEDELTA     i32 days, u32 seconds, u32 microseconds
    6  DATETIME      u16 year, u8 month/day/hour/minute/second, u32 microsecond, u8 fold, TZ
    7  TIME          u8 hour/minute/second, u32 microsecond, u8 fold, TZ
    8  NODE_ID       u16 port, u8 len(name), name, host (UTF-8)
    9  PROCESS_REF   i64 id, i64 creation, NODE_ID payload (absent: node is None)
    10 MONITOR_REF   as PROCESS_REF
    16 TUPLE         marker: [m, *items]
    17 SET           marker: [m, *items]
    18 FROZENSET     marker: [m, *items]
    19 DOWN          marker: [m, monitor, ref, reason]
    20 EXIT          marker: [m, from_, reason]
    21 ERROR_REASON  marker: [m, exc_type, message, traceback]
    22 REMOTE_ERROR  marker: [m, exc_type, message, traceback]  (any exception is sent as this)
    23 WIRE_TYPE     marker, payload = the registered name (UTF-8): [m, state]
    -1 (msgpack's timestamp) is never produced; from a peer it decodes as a UTC datetime.

TZ is empty for a naive value, else u8 kind, i64 UTC offset in microseconds, UTF-8 text:
kind 1 = `datetime.timezone` without a name, 2 = fixed offset with the name in text (a named
`timezone`, or any other tzinfo as it was at that instant), 3 = `zoneinfo.ZoneInfo` with the key
in text. The receiver rebuilds a ZoneInfo only if it knows the key *and* it gives the same UTC
offset at that wall time; otherwise it uses `timezone(offset)`. So the UTC offset always
survives exactly, the zone itself only when both nodes agree on it. A tzinfo whose
`utcoffset()` is None (Python treats the value as naive, e.g. a `time` with a ZoneInfo) is dropped.

`bytearray` and `memoryview` are sent as bytes and arrive as `bytes`. msgpack's own `ExtType`
and `Timestamp` objects are packed as they are and are not wire values: do not send them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import gc
import re
import struct
import traceback
import types
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from operator import itemgetter
from typing import Any, TypeVar, overload
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack  # type: ignore[import-untyped, unused-ignore]

from ..core.errors import DecodeError as DecodeError  # (defined in core.errors, re-exported)
from ..core.errors import InvalidArgumentError, RemoteError, SerializationError
from ..core.messages import Down, Exit
from ..core.node_id import NodeId
from ..core.reasons import ErrorReason
from ..core.refs import MonitorRef, ProcessRef

__all__ = ["Codec", "DecodeError", "wire_type"]

_ExtType: Any = msgpack.ExtType
_unpackb: Any = msgpack.unpackb
_new_tuple = tuple.__new__  # ExtType(...) validates in Python: 3x slower than building the tuple

# ---------------------------------------------------------------------------------------- codes
_WRAPPED = 0
_BIGINT = 1
_DECIMAL = 2
_UUID = 3
_DATE = 4
_TIMEDELTA = 5
_DATETIME = 6
_TIME = 7
_NODE_ID = 8
_PROCESS_REF = 9
_MONITOR_REF = 10
_TUPLE = 16
_SET = 17
_FROZENSET = 18
_DOWN = 19
_EXIT = 20
_ERROR_REASON = 21
_REMOTE_ERROR = 22
_WIRE_TYPE = 23

_TZ_FIXED = 1
_TZ_NAMED = 2
_TZ_ZONE = 3

_U32 = struct.Struct(">I")
_TD = struct.Struct(">iII")
_DT = struct.Struct(">HBBBBBIB")
_TM = struct.Struct(">BBBIB")
_TZ = struct.Struct(">Bq")
_REF = struct.Struct(">qq")
_U16 = struct.Struct(">H")

_CACHE_MAX = 4096  # per-cache entry cap: decoded NodeIds / refs / zones are shared, immutable

# Hash flooding (see the module docstring): msgpack builds maps of up to _SMALL_MAP entries
# itself; a bigger map, and any set, is checked first: at most _SAME_HASH keys may share a hash.
_SMALL_MAP = 32
_SAME_HASH = 8


class _Unsupported(Exception):
    """Raised inside the packer's default hook; `encode` turns it into a SerializationError."""

    def __init__(self, obj: object, detail: str | None = None) -> None:
        super().__init__(detail)
        self.obj = obj
        self.detail = detail


def _ext(code: int, payload: bytes) -> Any:
    return _new_tuple(_ExtType, (code, payload))


# ------------------------------------------------------------------------------ wire type registry
_T = TypeVar("_T", bound=type)


@dataclasses.dataclass(slots=True)
class _Marker:
    """Decoded marker ext: the first item of an array that `build` turns into the real value."""

    code: int
    build: Callable[[list[Any]], Any]


@dataclasses.dataclass(slots=True)
class _WireEntry:
    name: str
    cls: type
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    fields: tuple[str, ...] | None  # dataclass field names: for error paths
    ext: Any = dataclasses.field(init=False)
    marker: _Marker = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.ext = _ext(_WIRE_TYPE, self.name.encode("utf-8", "surrogatepass"))
        self.marker = _Marker(_WIRE_TYPE, self.build)

    def build(self, items: list[Any]) -> Any:
        if len(items) != 2:
            raise DecodeError(f"wire type {self.name!r}: malformed value")
        return self.decode(items[1])


_BY_CLASS: dict[type, _WireEntry] = {}
_BY_NAME: dict[str, _WireEntry] = {}


def _dataclass_codec(cls: type) -> tuple[Callable[[Any], Any], Callable[[Any], Any], tuple[str, ...]]:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    late = frozenset(f.name for f in fields if not f.init)  # not accepted by __init__

    def encode(obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in names}

    def decode(state: Any) -> Any:
        if type(state) is not dict:
            raise DecodeError(f"{cls.__qualname__}: expected a dict of fields")
        extra = {k: state.pop(k) for k in late if k in state} if late else None
        obj = cls(**state)
        if extra:
            for key, value in extra.items():
                object.__setattr__(obj, key, value)
        return obj

    return encode, decode, names


def _enum_codec(cls: type[enum.Enum]) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def encode(member: Any) -> str:
        return str(member.name)

    def decode(state: Any) -> Any:
        if type(state) is not str:
            raise DecodeError(f"{cls.__qualname__}: expected a member name")
        return cls[state]

    return encode, decode


def _namedtuple_codec(cls: type) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def encode(obj: Any) -> list[Any]:
        return list(obj)

    def decode(state: Any) -> Any:
        if type(state) is not list:
            raise DecodeError(f"{cls.__qualname__}: expected a list of fields")
        return cls(*state)

    return encode, decode


@overload
def wire_type(
    cls: _T, /, *, name: str | None = None,
    encode: Callable[[Any], Any] | None = None, decode: Callable[[Any], Any] | None = None,
) -> _T: ...


@overload
def wire_type(
    cls: None = None, /, *, name: str | None = None,
    encode: Callable[[Any], Any] | None = None, decode: Callable[[Any], Any] | None = None,
) -> Callable[[_T], _T]: ...


def wire_type(
    cls: type | None = None, /, *, name: str | None = None,
    encode: Callable[[Any], Any] | None = None, decode: Callable[[Any], Any] | None = None,
) -> Any:
    """Allow a user type on the wire under a stable name (the receiver must register it too).

    Dataclasses travel field by field, Enums by member name, NamedTuples by position; any
    other class needs `encode(obj) -> wire value` and `decode(wire value) -> obj`. Registering
    a name again replaces it (notebook cells get re-run); older classes registered under that
    name keep encoding with their own functions.
    """
    if (encode is None) != (decode is None):
        raise InvalidArgumentError("wire_type: give both encode= and decode=, or neither")

    def register(klass: _T) -> _T:
        _register(klass, name, encode, decode)
        return klass

    return register if cls is None else register(cls)


def _register(
    cls: type, name: str | None,
    encode: Callable[[Any], Any] | None, decode: Callable[[Any], Any] | None,
) -> None:
    if not isinstance(cls, type):
        raise InvalidArgumentError(f"wire_type: {cls!r} is not a class")
    if cls in _BUILTIN_TYPES:
        raise InvalidArgumentError(f"wire_type: {cls.__qualname__} is already a wire value")
    if name is None:
        name = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > 255:
        raise InvalidArgumentError(f"wire_type: name {name!r} must be a non-empty str of at most 255 bytes")
    fields: tuple[str, ...] | None = None
    if encode is None or decode is None:
        if dataclasses.is_dataclass(cls):
            encode, decode, fields = _dataclass_codec(cls)
        elif issubclass(cls, enum.Enum):
            encode, decode = _enum_codec(cls)
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
            encode, decode = _namedtuple_codec(cls)
        else:
            raise InvalidArgumentError(
                f"wire_type: {cls.__qualname__} is not a dataclass, Enum or NamedTuple; pass "
                "encode= and decode= (or put @wire_type above @dataclass)"
            )
    entry = _WireEntry(name, cls, encode, decode, fields)
    _BY_CLASS[cls] = entry
    _BY_NAME[name] = entry


# ----------------------------------------------------------------------------------- leaf encoders
# By id(): NodeId's dataclass __hash__ runs Python code, and the same few NodeId objects recur.
_NODE_BYTES: dict[int, tuple[NodeId, bytes]] = {}


def _node_payload(node: NodeId) -> bytes:
    hit = _NODE_BYTES.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    name = node.name.encode("utf-8")
    payload = _U16.pack(node.port) + bytes((len(name),)) + name + node.host.encode("utf-8")
    if len(_NODE_BYTES) >= _CACHE_MAX:
        _NODE_BYTES.clear()
    _NODE_BYTES[id(node)] = (node, payload)  # keeps `node` alive, so its id is not reused
    return payload


def _offset_us(offset: timedelta) -> int:
    return (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds


def _tz_payload(value: datetime | time) -> bytes:
    offset = value.utcoffset()
    if offset is None:
        return b""
    tz = value.tzinfo
    name: str | None
    if type(tz) is timezone:
        name = tz.tzname(None)
        if name == timezone(offset).tzname(None):
            return _TZ.pack(_TZ_FIXED, _offset_us(offset))
    elif isinstance(tz, ZoneInfo) and tz.key is not None:
        return _TZ.pack(_TZ_ZONE, _offset_us(offset)) + tz.key.encode("utf-8")
    else:
        name = value.tzname()
    if name is None:
        return _TZ.pack(_TZ_FIXED, _offset_us(offset))
    return _TZ.pack(_TZ_NAMED, _offset_us(offset)) + name.encode("utf-8", "surrogatepass")


def _enc_bigint(value: int) -> Any:
    return _ext(_BIGINT, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _enc_datetime(dt: datetime) -> Any:
    head = _DT.pack(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond, dt.fold)
    if dt.tzinfo is None:
        return _ext(_DATETIME, head)
    return _ext(_DATETIME, head + _tz_payload(dt))


def _enc_time(t: time) -> Any:
    head = _TM.pack(t.hour, t.minute, t.second, t.microsecond, t.fold)
    if t.tzinfo is None:
        return _ext(_TIME, head)
    return _ext(_TIME, head + _tz_payload(t))


def _exception_fields(exc: BaseException) -> list[str]:
    if isinstance(exc, RemoteError):
        return [str(exc.exc_type), str(exc.message), str(exc.traceback)]
    kind = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {kind}>"
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = ""
    return [kind, message, text]


def _enc_down(d: Down) -> list[Any]:
    if type(d.monitor) is not MonitorRef or type(d.ref) is not ProcessRef:
        raise _Unsupported(d, "Down needs a MonitorRef and a ProcessRef")
    return [_M_DOWN, d.monitor, d.ref, d.reason]


def _enc_exit(e: Exit) -> list[Any]:
    if type(e.from_) is not ProcessRef:
        raise _Unsupported(e, "Exit.from_ must be a ProcessRef")
    return [_M_EXIT, e.from_, e.reason]


def _enc_error_reason(r: ErrorReason) -> list[Any]:
    if type(r.exc_type) is not str or type(r.message) is not str or type(r.traceback) is not str:
        raise _Unsupported(r, "ErrorReason fields must be str")
    return [_M_ERROR_REASON, r.exc_type, r.message, r.traceback]


# Stateless encoders by exact type; refs need the codec's local node and are handled in the hook.
_ENCODERS: dict[type, Callable[[Any], Any]] = {
    int: _enc_bigint,  # only reached for ints msgpack cannot hold
    Decimal: lambda d: _ext(_DECIMAL, str(d).encode("ascii")),
    UUID: lambda u: _ext(_UUID, u.bytes),
    date: lambda d: _ext(_DATE, _U32.pack(d.toordinal())),
    timedelta: lambda td: _ext(_TIMEDELTA, _TD.pack(td.days, td.seconds, td.microseconds)),
    datetime: _enc_datetime,
    time: _enc_time,
    NodeId: lambda n: _ext(_NODE_ID, _node_payload(n)),
}

_M_TUPLE = _ext(_TUPLE, b"")
_M_SET = _ext(_SET, b"")
_M_FROZENSET = _ext(_FROZENSET, b"")
_M_DOWN = _ext(_DOWN, b"")
_M_EXIT = _ext(_EXIT, b"")
_M_ERROR_REASON = _ext(_ERROR_REASON, b"")
_M_REMOTE_ERROR = _ext(_REMOTE_ERROR, b"")

# Containers: return a marker array that msgpack keeps packing (no nested pack call).
_CONTAINERS: dict[type, Callable[[Any], list[Any]]] = {
    tuple: lambda t: [_M_TUPLE, *t],
    set: lambda s: [_M_SET, *s],
    frozenset: lambda s: [_M_FROZENSET, *s],
    Down: _enc_down,
    Exit: _enc_exit,
    ErrorReason: _enc_error_reason,
    RemoteError: lambda e: [_M_REMOTE_ERROR, *_exception_fields(e)],
}

_NATIVE_TYPES: frozenset[type] = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, memoryview, list, dict}
)
_BUILTIN_TYPES = _NATIVE_TYPES | set(_ENCODERS) | set(_CONTAINERS) | {ProcessRef, MonitorRef}


# ----------------------------------------------------------------------------------- leaf decoders
_NODE_CACHE: dict[bytes, NodeId] = {}
_PID_CACHE: dict[bytes, ProcessRef] = {}
_ZONE_CACHE: dict[str, ZoneInfo | None] = {}
_DECIMAL_NAN = re.compile(r"\s*[+-]?s?nan\d*\s*", re.IGNORECASE)
_ZONE_KEY = re.compile(r"^[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+){0,3}$")


def _dec_node(payload: bytes) -> NodeId:
    node = _NODE_CACHE.get(payload)
    if node is None:
        if len(payload) < 3 or len(payload) < 3 + payload[2]:
            raise DecodeError("malformed NodeId")
        end = 3 + payload[2]
        node = NodeId(
            payload[3:end].decode("utf-8"), payload[end:].decode("utf-8"), (payload[0] << 8) | payload[1]
        ).interned()
        if len(_NODE_CACHE) >= _CACHE_MAX:
            _NODE_CACHE.clear()
        _NODE_CACHE[payload] = node
    return node


def _dec_pid(payload: bytes) -> ProcessRef:
    ref = _PID_CACHE.get(payload)
    if ref is None:
        pid, creation = _REF.unpack_from(payload)
        ref = ProcessRef(_dec_node(payload[16:]) if len(payload) > 16 else None, pid, creation)
        if len(_PID_CACHE) >= _CACHE_MAX:
            _PID_CACHE.clear()
        _PID_CACHE[payload] = ref
    return ref


def _dec_mref(payload: bytes) -> MonitorRef:
    mid, creation = _REF.unpack_from(payload)
    return MonitorRef(_dec_node(payload[16:]) if len(payload) > 16 else None, mid, creation)


def _zone(key: str) -> ZoneInfo | None:
    """The local ZoneInfo for `key`, or None; only well-formed zone names reach the tz database."""
    if key in _ZONE_CACHE:
        return _ZONE_CACHE[key]
    zone: ZoneInfo | None = None
    if len(key) <= 64 and _ZONE_KEY.match(key):
        try:
            zone = ZoneInfo(key)
        except Exception:
            zone = None
    if len(_ZONE_CACHE) >= 256:
        _ZONE_CACHE.clear()
    _ZONE_CACHE[key] = zone
    return zone


def _with_tz(value: Any, payload: bytes, start: int) -> Any:
    """Attach the TZ part of a datetime/time payload that starts at `start`."""
    if len(payload) == start:
        return value
    kind, offset_us = _TZ.unpack_from(payload, start)
    text = payload[start + _TZ.size:].decode("utf-8", "surrogatepass")
    offset = timedelta(microseconds=offset_us)
    if kind == _TZ_FIXED and not text:
        return value.replace(tzinfo=timezone(offset))
    if kind == _TZ_NAMED:
        return value.replace(tzinfo=timezone(offset, text))
    if kind == _TZ_ZONE and type(value) is datetime:
        zone = _zone(text)
        if zone is not None:
            zoned = value.replace(tzinfo=zone)
            if zoned.utcoffset() == offset:
                return zoned
        return value.replace(tzinfo=timezone(offset))
    raise DecodeError(f"unknown time zone kind {kind}")


def _dec_datetime(payload: bytes) -> datetime:
    y, mo, d, h, mi, s, us, fold = _DT.unpack_from(payload)
    value: datetime = _with_tz(datetime(y, mo, d, h, mi, s, us, fold=fold), payload, _DT.size)
    return value


def _dec_time(payload: bytes) -> time:
    h, mi, s, us, fold = _TM.unpack_from(payload)
    value: time = _with_tz(time(h, mi, s, us, fold=fold), payload, _TM.size)
    return value


def _dec_decimal(payload: bytes) -> Decimal:
    text = payload.decode("ascii")
    value = Decimal(text)  # exact; but junk becomes NaN if the thread's context does not trap it
    if value.is_nan() and not _DECIMAL_NAN.fullmatch(text):
        raise DecodeError(f"malformed Decimal {text[:40]!r}")
    return value


_LEAF_DECODERS: dict[int, Callable[[bytes], Any]] = {
    _BIGINT: lambda p: int.from_bytes(p, "big", signed=True),
    _DECIMAL: _dec_decimal,
    _UUID: lambda p: UUID(bytes=p),
    _DATE: lambda p: date.fromordinal(_U32.unpack(p)[0]),
    _TIMEDELTA: lambda p: timedelta(*_TD.unpack(p)),
    _DATETIME: _dec_datetime,
    _TIME: _dec_time,
    _NODE_ID: _dec_node,
    _PROCESS_REF: _dec_pid,
    _MONITOR_REF: _dec_mref,
}


# ----------------------------------------------------------------------------------- marker builders
def _fields(items: list[Any], count: int, what: str) -> list[Any]:
    if len(items) != count + 1:
        raise DecodeError(f"malformed {what}")
    return items


def _build_down(items: list[Any]) -> Down:
    _, monitor, ref, reason = _fields(items, 3, "Down")
    if type(monitor) is not MonitorRef or type(ref) is not ProcessRef:
        raise DecodeError("malformed Down")
    return Down(monitor, ref, reason)


def _build_exit(items: list[Any]) -> Exit:
    _, from_, reason = _fields(items, 2, "Exit")
    if type(from_) is not ProcessRef:
        raise DecodeError("malformed Exit")
    return Exit(from_, reason)


def _texts(items: list[Any], what: str) -> tuple[str, str, str]:
    _, exc_type, message, text = _fields(items, 3, what)
    if type(exc_type) is not str or type(message) is not str or type(text) is not str:
        raise DecodeError(f"malformed {what}")
    return exc_type, message, text


def _hash_checked(keys: list[Any]) -> list[Any]:
    """`keys` (of a set being built), unless more than _SAME_HASH share a hash value (then
    inserting them would take time quadratic in their number: the message is refused).

    Linear: the hash values are ints, and ints below 2**61 - 1 hash to themselves."""
    if len(keys) > _SMALL_MAP and len(set(map(hash, keys))) < len(keys):
        _refuse_flooding(keys)
    return keys


def _checked_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack's object_pairs_hook on the checked path (maps of any size): see `_hash_checked`."""
    if len(pairs) > _SMALL_MAP and len(set(map(hash, map(_first, pairs)))) < len(pairs):
        _refuse_flooding(list(map(_first, pairs)))
    return dict(pairs)


def _refuse_flooding(keys: list[Any]) -> None:
    top = max(Counter(map(hash, keys)).values())
    if top > _SAME_HASH:
        raise DecodeError(
            f"{top} keys of one dict or set share a hash value (at most {_SAME_HASH} may): "
            "refused as a hash-flooding attempt"
        )


_first = itemgetter(0)


def map_too_big(exc: BaseException) -> bool:
    """Whether msgpack refused a map for having more than _SMALL_MAP entries (then decode the
    message again with every map checked)."""
    return type(exc) is ValueError and "max_map_len" in str(exc)


_TUPLE_MARKER = _Marker(_TUPLE, lambda items: tuple(items[1:]))
_MARKERS: dict[int, _Marker] = {
    _TUPLE: _TUPLE_MARKER,
    _SET: _Marker(_SET, lambda items: set(_hash_checked(items[1:]))),
    _FROZENSET: _Marker(_FROZENSET, lambda items: frozenset(_hash_checked(items[1:]))),
    _DOWN: _Marker(_DOWN, _build_down),
    _EXIT: _Marker(_EXIT, _build_exit),
    _ERROR_REASON: _Marker(_ERROR_REASON, lambda items: ErrorReason(*_texts(items, "ErrorReason"))),
    _REMOTE_ERROR: _Marker(_REMOTE_ERROR, lambda items: RemoteError(*_texts(items, "RemoteError"))),
}


# ------------------------------------------------------------------------------------ error paths
_CODE_TYPES = (
    type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
    types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType, types.CodeType, types.FrameType,
    functools.partial,
)
_PLAIN_BASES: tuple[type, ...] = (
    bool, int, float, str, bytes, list, dict, tuple, frozenset, set, datetime, date, time, timedelta,
    Decimal, UUID,
)


def _hint(obj: object) -> str:
    if isinstance(obj, _CODE_TYPES):
        return "code, classes, modules and generators never travel (send data or a registered name)"
    for base in _PLAIN_BASES:
        if isinstance(obj, base):
            return (
                f"it is a subclass of {base.__name__}: convert it to a plain {base.__name__} "
                "or decorate it with noex_lab.wire_type"
            )
    return "decorate it with noex_lab.wire_type"


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _children(obj: Any, path: str) -> list[tuple[Any, str]]:
    t = type(obj)
    if t is list or t is tuple:
        return [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if t is dict:
        out: list[tuple[Any, str]] = []
        for i, (k, v) in enumerate(obj.items()):
            out.append((k, f"{path}<key #{i}>"))
            out.append((v, f"{path}[{_short(k)}]"))
        return out
    if t is set or t is frozenset:
        return [(v, f"{path}<element #{i}>") for i, v in enumerate(obj)]
    if t is Down:
        return [(obj.monitor, f"{path}.monitor"), (obj.ref, f"{path}.ref"), (obj.reason, f"{path}.reason")]
    if t is Exit:
        return [(obj.from_, f"{path}.from_"), (obj.reason, f"{path}.reason")]
    entry = _BY_CLASS.get(t)
    if entry is not None:
        if entry.fields is not None:
            return [(getattr(obj, f, None), f"{path}.{f}") for f in entry.fields]
        try:
            return [(entry.encode(obj), f"{path}<encoded {entry.name}>")]
        except Exception:
            return []
    return []


def _locate(root: Any, target: object) -> str | None:
    """Path of `target` (by identity) inside `root`, walked like the encoder; None if not found."""
    stack: list[tuple[Any, str]] = [(root, "msg")]
    seen: set[int] = set()
    budget = 1_000_000
    while stack and budget > 0:
        budget -= 1
        obj, path = stack.pop()
        if obj is target:
            return path
        children = _children(obj, path)
        if children:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            stack.extend(reversed(children))
    return None


# ------------------------------------------------------------------------------------------ Codec
class Codec:
    """Encodes messages for one node's connections and decodes what peers send.

    Not thread-safe (it reuses one msgpack Packer): use it from the node's event loop thread.
    `local_node` is written into refs whose node is None, so the receiver can reach them.
    """

    __slots__ = (
        "_ext_checked", "_ext_leaf", "_ext_message", "_ext_slow", "_ext_value", "_list_hook", "_local_node",
        "_marked", "_max_bytes", "_pack", "_pack_surrogates", "_pending", "_refs",
    )

    def __init__(self, local_node: NodeId | None = None, *, max_bytes: int = 64 * 2**20) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 < max_bytes < 2**32:
            raise InvalidArgumentError(f"max_bytes={max_bytes!r}: use a positive int below 4 GiB (frame limit)")
        self._local_node = local_node
        self._max_bytes = max_bytes
        self._marked = False
        self._pending = 0  # markers not consumed by their array yet (decoding a WRAPPED payload)
        self._refs: dict[int, tuple[ProcessRef | MonitorRef, Any]] = {}
        self._pack: Callable[[Any], bytes] = msgpack.Packer(
            default=self._default, strict_types=True, use_bin_type=True, datetime=False
        ).pack
        self._pack_surrogates: Callable[[Any], bytes] | None = None
        # Bound once: attribute access would build a new bound method per call.
        self._ext_slow = self._decode_ext_slow
        self._list_hook = self._decode_list
        self._ext_message = self._decode_ext_message  # streamed messages (the hot path)
        self._ext_value = self._decode_ext_value  # decode(): any value
        self._ext_checked = self._decode_ext_checked  # decode() again, every map checked
        self._ext_leaf = self._decode_ext_leaf  # IncrementalDecoder: no WRAPPED inside a message

    @property
    def local_node(self) -> NodeId | None:
        return self._local_node

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    # -------------------------------------------------------------------------------- encoding
    def encode(self, value: Any) -> bytes:
        """Bytes for `value`; SerializationError says what cannot travel and where it is."""
        self._marked = False
        try:
            try:
                data = self._pack(value)
            except UnicodeEncodeError:  # a str with lone surrogates: rare, so off the fast path
                self._marked = False
                data = self._surrogate_packer()(value)
        except _Unsupported as exc:
            raise self._unsupported(value, exc) from exc.__cause__
        except SerializationError:
            raise
        except ValueError as exc:
            if "recursion limit" in str(exc):
                raise SerializationError(
                    "msg: nested deeper than 1024 levels (or it contains itself); flatten it"
                ) from None
            raise SerializationError(f"msg: cannot encode: {exc}") from exc
        except Exception as exc:
            raise SerializationError(f"msg: cannot encode: {type(exc).__name__}: {exc}") from exc
        if self._marked or len(data) > self._max_bytes:
            return self.finish(data)
        return data

    def finish(self, data: bytes) -> bytes:
        """`encode`'s last step, for what its packer produced when it marked a container (the
        message is wrapped) or went past `max_bytes` (SerializationError). (`Connection.send`
        runs the packer itself, then this only in those two cases.)"""
        if self._marked and len(data) <= self._max_bytes:  # (ext32 holds < 4 GiB, as max_bytes)
            data = _wrap_header(len(data)) + data
        if len(data) > self._max_bytes:
            raise SerializationError(
                f"the message is {len(data)} bytes, more than the limit of {self._max_bytes} "
                "(max_message_bytes); send it in parts"
            )
        return data

    def _surrogate_packer(self) -> Callable[[Any], bytes]:
        if self._pack_surrogates is None:
            self._pack_surrogates = msgpack.Packer(
                default=self._default, strict_types=True, use_bin_type=True, datetime=False,
                unicode_errors="surrogatepass",
            ).pack
        return self._pack_surrogates

    def _unsupported(self, value: Any, exc: _Unsupported) -> SerializationError:
        path = _locate(value, exc.obj) or "msg (somewhere inside)"
        if exc.detail is not None:
            return SerializationError(f"{path}: cannot send {type(exc.obj)!r}: {exc.detail}")
        return SerializationError(f"{path}: cannot send {type(exc.obj)!r}; {_hint(exc.obj)}")

    def _default(self, obj: Any) -> Any:
        """msgpack's hook for every value that is not a native msgpack type."""
        t = type(obj)
        if t is tuple:  # by far the most common non-native value
            self._marked = True
            return [_M_TUPLE, *obj]
        leaf = _ENCODERS.get(t)
        if leaf is not None:
            try:
                return leaf(obj)
            except Exception as exc:
                raise _Unsupported(obj, f"cannot encode it ({exc})") from exc
        if t is ProcessRef or t is MonitorRef:
            return self._encode_ref(obj)
        container = _CONTAINERS.get(t)
        if container is not None:
            self._marked = True
            return container(obj)
        entry = _BY_CLASS.get(t)
        if entry is not None:
            try:
                state = entry.encode(obj)
            except Exception as exc:
                raise _Unsupported(obj, f"its wire_type encode function raised {exc!r}") from exc
            self._marked = True
            return [entry.ext, state]
        if isinstance(obj, BaseException):
            self._marked = True
            return [_M_REMOTE_ERROR, *_exception_fields(obj)]
        raise _Unsupported(obj)

    def _encode_ref(self, ref: ProcessRef | MonitorRef) -> Any:
        # By identity: a process sends its own ref again and again; the dataclass hash is slow.
        hit = self._refs.get(id(ref))
        if hit is not None and hit[0] is ref:
            return hit[1]
        node = ref.node if ref.node is not None else self._local_node
        try:
            payload = _REF.pack(ref.id, ref.creation)
            if node is not None:
                payload += _node_payload(node)
        except Exception as exc:
            raise _Unsupported(ref, f"cannot encode it ({exc})") from exc
        ext = _ext(_PROCESS_REF if type(ref) is ProcessRef else _MONITOR_REF, payload)
        if len(self._refs) >= _CACHE_MAX:
            self._refs.clear()
        self._refs[id(ref)] = (ref, ext)  # keeps `ref` alive, so its id is not reused
        return ext

    # -------------------------------------------------------------------------------- decoding
    def stream_unpacker(self, max_buffer_size: int) -> msgpack.Unpacker:
        """A streaming decoder for the messages of a connection's small frames (hot path: one C
        loop over the many messages of a frame). It raises what msgpack or a failing type decode
        raises, and is unusable after that: callers make a new one. A map of more than
        `_SMALL_MAP` entries raises ValueError (see `map_too_big`): decode that message with
        `decode`, which checks its maps. A WRAPPED value may not be None (a message never is)."""
        return msgpack.Unpacker(
            ext_hook=self._ext_message, strict_map_key=False, unicode_errors="surrogatepass", timestamp=3,
            max_buffer_size=max_buffer_size, read_size=min(max_buffer_size, 64 * 1024),
            max_map_len=_SMALL_MAP,
        )

    def decode_one(self, data: bytes | bytearray | memoryview) -> Any:
        """The one message `data` holds, decoded as `stream_unpacker` does, in one `unpackb` call
        (a connection's small frame holding a lone request or reply). It raises ExtraData when
        more follows it, and whatever msgpack or a failing type decode raises: callers decode the
        data again with a stream unpacker then, which tells these cases apart."""
        return _unpackb(
            data, ext_hook=self._ext_message, strict_map_key=False, unicode_errors="surrogatepass", timestamp=3,
            max_map_len=_SMALL_MAP,
        )

    def incremental(self, data: bytes | bytearray | memoryview, slice_bytes: int = 64 * 1024) -> IncrementalDecoder:
        """A decoder for the messages in `data` that takes at most `slice_bytes` of it per step."""
        return IncrementalDecoder(self, data, slice_bytes)

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """The value in `data`; anything malformed, unknown or too big raises DecodeError."""
        try:
            if len(data) > self._max_bytes or (type(data) is memoryview and data.nbytes > self._max_bytes):
                size = data.nbytes if type(data) is memoryview else len(data)
                raise DecodeError(f"the message is {size} bytes, more than the limit of {self._max_bytes}")
            # unpackb caps every declared length by the buffer size: no allocation from a header.
            try:
                return _unpackb(
                    data, ext_hook=self._ext_value, strict_map_key=False, unicode_errors="surrogatepass",
                    timestamp=3, max_map_len=_SMALL_MAP,
                )
            except ValueError as exc:
                if not map_too_big(exc):
                    raise
            return _unpackb(  # a map too big for msgpack to build unchecked: check every map
                data, ext_hook=self._ext_checked, object_pairs_hook=_checked_dict, strict_map_key=False,
                unicode_errors="surrogatepass", timestamp=3,
            )
        except DecodeError:
            raise
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise DecodeError(f"malformed message ({detail[:200]})") from exc

    def _decode_ext_message(self, code: int, payload: bytes) -> Any:
        if code == _PROCESS_REF:  # the common case first: the sender ref of a call
            ref = _PID_CACHE.get(payload)
            if ref is not None:
                return ref
        elif code == _WRAPPED:
            # Containers inside: decode again with the list hook (one level only: the slow
            # hook rejects WRAPPED), then check every marker was consumed by its array.
            # (`_unwrap`, inlined: this is the hot path of messages holding tuples.)
            outer, self._pending = self._pending, 0  # saved: a wire type's decode may decode too
            try:
                value = _unpackb(
                    payload, ext_hook=self._ext_slow, list_hook=self._list_hook, strict_map_key=False,
                    unicode_errors="surrogatepass", timestamp=3, max_map_len=_SMALL_MAP,
                )
                if self._pending:
                    raise DecodeError("a type marker is out of place")
            finally:
                self._pending = outer
            if value is None:  # never a message: so a value completed by a nil of ours is never None
                raise DecodeError("a wrapped message is None")
            return value
        leaf = _LEAF_DECODERS.get(code)
        if leaf is None:
            raise DecodeError(f"unexpected ext type {code}")
        return leaf(payload)

    def _decode_ext_value(self, code: int, payload: bytes) -> Any:
        if code == _WRAPPED:
            return self._unwrap(payload, False)
        return self._decode_ext_leaf(code, payload)

    def _decode_ext_checked(self, code: int, payload: bytes) -> Any:
        if code == _WRAPPED:
            return self._unwrap(payload, True)
        return self._decode_ext_leaf(code, payload)

    def _decode_ext_leaf(self, code: int, payload: bytes) -> Any:
        leaf = _LEAF_DECODERS.get(code)
        if leaf is None:
            raise DecodeError(f"unexpected ext type {code}")
        return leaf(payload)

    def _unwrap(self, payload: bytes, checked: bool) -> Any:
        """A WRAPPED payload; `checked`: every map through `_checked_dict`."""
        outer, self._pending = self._pending, 0
        try:
            if checked:
                value = _unpackb(
                    payload, ext_hook=self._ext_slow, list_hook=self._list_hook, object_pairs_hook=_checked_dict,
                    strict_map_key=False, unicode_errors="surrogatepass", timestamp=3,
                )
            else:
                value = _unpackb(
                    payload, ext_hook=self._ext_slow, list_hook=self._list_hook, strict_map_key=False,
                    unicode_errors="surrogatepass", timestamp=3, max_map_len=_SMALL_MAP,
                )
            if self._pending:
                raise DecodeError("a type marker is out of place")
        finally:
            self._pending = outer
        return value

    def _decode_ext_slow(self, code: int, payload: bytes) -> Any:
        if code == _TUPLE and not payload:
            self._pending += 1
            return _TUPLE_MARKER
        marker = _MARKERS.get(code)
        if marker is not None:
            if payload:
                raise DecodeError(f"malformed marker {code}")
        elif code == _WIRE_TYPE:
            name = payload.decode("utf-8", "surrogatepass")
            entry = _BY_NAME.get(name)
            if entry is None:
                raise DecodeError(
                    f"unknown wire type {name!r}: register it with noex_lab.wire_type on this node too"
                )
            marker = entry.marker
        else:
            leaf = _LEAF_DECODERS.get(code)
            if leaf is None:
                raise DecodeError(f"unexpected ext type {code}")
            return leaf(payload)
        self._pending += 1
        return marker

    def _decode_list(self, items: list[Any]) -> Any:
        if items:
            head = items[0]
            if type(head) is _Marker:
                self._pending -= 1
                if head is _TUPLE_MARKER:
                    return tuple(items[1:])
                return head.build(items)
        return items


CONTAINER_BYTES = 3  # big messages: at least this many bytes per array or map, on average ([1, 2] is 3)


class IncrementalDecoder:
    """Decodes the messages in `data` (a big frame, or a message reassembled from chunks) at most
    `slice_bytes` of it per `step`, so that a caller can spread a big message over several turns
    of the event loop: whatever a message holds, one step costs time bounded by the slice.

    A WRAPPED message is decoded as its payload, a slice per step too; a WRAPPED ext inside a
    message is refused (the encoder only wraps whole messages). Maps of up to `_SMALL_MAP`
    entries are left to msgpack; a message holding a bigger one is decoded again from its start
    with every map checked (`_checked_dict`). When `step` raises, `position` is where the failing
    message starts: `skip` passes over it if it is well-formed msgpack."""

    __slots__ = ("_base", "_checked", "_codec", "_containers", "_data", "_end", "_error", "_fed", "_markers",
                 "_room", "_slice", "_unpacker", "_wrapped", "position")

    def __init__(self, codec: Codec, data: bytes | bytearray | memoryview, slice_bytes: int) -> None:
        self._codec = codec
        self._data = data if type(data) is memoryview else memoryview(data)
        self._slice = max(slice_bytes, 1)
        self._unpacker: Any = None
        self._markers: Codec | None = None  # decodes WRAPPED payloads: its hooks and their count
        self._wrapped = False  # the message being decoded is a WRAPPED payload
        self._base = self._fed = self._end = 0  # the unpacker's range of data, and how much it was fed
        self._checked = False
        self._error: Exception | None = None  # raised by the next step (this one returned messages)
        self._containers = self._room = 0  # arrays and maps of the message being decoded, and its cap
        self.position = 0  # where the message being decoded starts (len(data) at the end)

    @property
    def done(self) -> bool:
        return self._unpacker is None and self._error is None and self.position >= len(self._data)

    def step(self) -> list[Any]:
        """Decode one more slice; return the messages it completed (maybe none). Raises what
        decoding raises (DecodeError when the data ends inside a message)."""
        out: list[Any] = []
        error, self._error = self._error, None
        if error is None:
            # A slice may hold 64 Ki small containers. CPython's collector runs every 700 new
            # ones, and through the whole heap each time the survivors grew by a quarter: many
            # full collections while a big message is built. Paused for the step, it runs once
            # after it instead (a step is synchronous: the collector is always resumed).
            collecting = gc.isenabled()
            if collecting:
                gc.disable()
            try:
                if self._unpacker is None and self.position < len(self._data):
                    self._start()
                if self._unpacker is not None:
                    self._feed(out)
            except Exception as exc:
                error = exc
            finally:
                if collecting:
                    gc.enable()
            if error is None:
                return out
            if out:  # deliver what was decoded before the failure first
                self._error = error
                return out
        self._unpacker = None
        if map_too_big(error) and not self._checked:
            self._checked = True  # decode this message again, every map checked
            return out
        raise error

    def skip(self) -> bool:
        """Pass over the message at `position` (after `step` raised); False when the bytes there
        are not one well-formed msgpack value."""
        found = skim(self._data, self.position)
        if found is None:
            return False
        self.position = found[1]
        self._unpacker = None
        self._error = None
        return True

    def _start(self) -> None:
        data, position = self._data, self.position
        wrapped = wrapped_payload(data, position)
        if wrapped is not None:
            start, end = wrapped
            if end > len(data):
                raise DecodeError("the data ends inside a message")
            # A codec of its own: the count of markers is per codec, and the caller's codec may
            # decode other messages between two steps.
            markers = self._markers
            if markers is None:
                self._markers = markers = Codec(max_bytes=self._codec.max_bytes)
            markers._pending = 0
            self._wrapped = True
            ext_hook: Any = markers._ext_slow
            list_hook: Any = markers._list_hook
        else:
            start, end = position, len(data)
            self._wrapped = False
            ext_hook, list_hook = self._codec._ext_leaf, None
        size = max(end - start, 1)
        # At most one array or map per CONTAINER_BYTES of the message: a million empty lists in
        # 1 MiB decode in slices, but freeing them and the collector's passes over them would
        # still hold the loop ~60 ms or more in one piece. Real data spends more bytes per container.
        self._containers, self._room = 0, max(size // CONTAINER_BYTES, 1024)
        count = self._count
        pairs_hook = _checked_dict
        options: dict[str, Any] = (
            {"object_pairs_hook": lambda pairs: count(pairs_hook(pairs))} if self._checked
            else {"max_map_len": _SMALL_MAP, "object_hook": count}
        )
        options["list_hook"] = count if list_hook is None else (lambda value: count(list_hook(value)))
        self._unpacker = msgpack.Unpacker(
            ext_hook=ext_hook, strict_map_key=False, unicode_errors="surrogatepass", timestamp=3,
            max_buffer_size=size, read_size=min(size, self._slice), **options,
        )
        self._base = self._fed = start
        self._end = end

    def _count(self, value: Any) -> Any:
        """Count one array or map of the message; DecodeError past the cap."""
        self._containers += 1
        if self._containers > self._room:
            raise DecodeError(
                f"the message holds more than {self._room} arrays and maps (one per {CONTAINER_BYTES} bytes "
                "at most); send fewer, bigger containers"
            )
        return value

    def _feed(self, out: list[Any]) -> None:
        unpacker, data, end = self._unpacker, self._data, self._end
        if self._fed < end:
            stop = min(self._fed + self._slice, end)
            unpacker.feed(data[self._fed:stop])
            self._fed = stop
        markers = self._markers
        if self._wrapped and markers is not None:  # a WRAPPED payload: exactly one value, a list
            try:
                value = unpacker.unpack()
            except msgpack.OutOfData:
                if self._fed >= end:
                    raise DecodeError("malformed message: its wrapped payload ends early") from None
                return
            if self._base + unpacker.tell() != end:
                raise DecodeError("malformed message: extra data in its wrapped payload")
            if markers._pending:
                raise DecodeError("a type marker is out of place")
            if type(value) is not list:
                raise DecodeError("a wrapped message is not a list")
            out.append(value)
            self.position = end
            self._unpacker = None
            return
        for value in unpacker:
            out.append(value)
            self.position = at = self._base + unpacker.tell()
            if at < end and wrapped_payload(data, at) is not None:
                self._unpacker = None  # the next message is WRAPPED: decoded on its own
                return
        if self._fed >= end:
            if self.position != end:
                raise DecodeError("the data ends inside a message")
            self._unpacker = None


# ----------------------------------------------------------------- reading msgpack without decoding
def wrapped_payload(data: memoryview | bytes, at: int) -> tuple[int, int] | None:
    """(start, end) of the payload if a WRAPPED ext starts at `at` (`end` may lie beyond data)."""
    if at >= len(data):
        return None
    first = data[at]
    if 0xD4 <= first <= 0xD8:
        size, start = 1 << (first - 0xD4), at + 2
    elif 0xC7 <= first <= 0xC9:
        width = 1 << (first - 0xC7)  # 1, 2 or 4 length bytes
        if at + 1 + width >= len(data):
            return None
        size = int.from_bytes(data[at + 1:at + 1 + width], "big")
        start = at + 2 + width
    else:
        return None
    if start - 1 >= len(data) or data[start - 1] != _WRAPPED:
        return None
    return start, start + size


def skim(data: memoryview | bytes, at: int, skip: int = 0) -> tuple[int, int] | None:
    """(start, end) of the msgpack value after the `skip` values that follow `at` in `data`,
    found without building any value (no hooks; linear); None when the bytes are malformed or
    end inside that value."""
    size = max(len(data) - at, 1)
    unpacker = msgpack.Unpacker(max_buffer_size=size, read_size=min(size, 64 * 1024))
    unpacker.feed(data[at:])
    try:
        for _ in range(skip):
            unpacker.skip()
        start = at + unpacker.tell()
        unpacker.skip()
    except Exception:
        return None
    return start, at + unpacker.tell()


def message_head(data: memoryview | bytes, at: int) -> tuple[int, int | None] | None:
    """The type (first item) and request id (second item, if an int) of the message at `at`,
    read without decoding the rest, through a WRAPPED ext too; None when it does not start like
    a message (an array whose first item is an int)."""
    wrapped = wrapped_payload(data, at)
    if wrapped is not None:
        at = wrapped[0]
    if at >= len(data):
        return None
    first = data[at]
    if 0x90 <= first <= 0x9F:
        count, at = first & 0x0F, at + 1
    elif first in (0xDC, 0xDD) and at + (3 if first == 0xDC else 5) <= len(data):
        width = 2 if first == 0xDC else 4
        count, at = int.from_bytes(data[at + 1:at + 1 + width], "big"), at + 1 + width
    else:
        return None
    kind = _int_at(data, at) if count >= 1 else None
    if kind is None:
        return None
    second = _int_at(data, kind[1]) if count >= 2 else None
    return kind[0], (second[0] if second is not None else None)


_INT_SIZES = {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False),
              0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}


def _int_at(data: memoryview | bytes, at: int) -> tuple[int, int] | None:
    """(value, end) of a msgpack int at `at`, else None."""
    if at >= len(data):
        return None
    first = data[at]
    if first <= 0x7F:
        return first, at + 1
    if first >= 0xE0:
        return first - 0x100, at + 1
    sized = _INT_SIZES.get(first)
    if sized is None or at + 1 + sized[0] > len(data):
        return None
    return int.from_bytes(data[at + 1:at + 1 + sized[0]], "big", signed=sized[1]), at + 1 + sized[0]


def _wrap_header(size: int) -> bytes:
    if size < 0x100:
        return bytes((0xC7, size, _WRAPPED))
    if size < 0x10000:
        return b"\xc8" + _U16.pack(size) + b"\x00"
    return b"\xc9" + _U32.pack(size) + b"\x00"

"""Error replies come from peers: rebuilding one never raises, whatever it holds, and a typed
error keeps its class and fields. Every error of the runtime is defined in `core.errors`, exported
from `noex_lab`, and comes back across the wire with its own class."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

import noex_lab
from noex_lab import (
    CallError,
    CallTimeoutError,
    NodeId,
    NodeNotReachableError,
    NoexError,
    ServerNotRunningError,
)
from noex_lab.core._backend import current_loop_key
from noex_lab.distribution import protocol as p
from noex_lab.distribution.routing import decode_error, encode_error
from noex_lab.errors import (
    InvalidArgumentError,
    UnknownOperationError,
    UnsupportedEventLoopError,
)


@pytest.mark.parametrize("details", [
    None, [], "x" * 10_000, [p.ERR_TIMEOUT, "soon"], [p.ERR_TIMEOUT], [p.ERR_EXCEPTION, "NodeNotReachableError"],
    [p.ERR_EXCEPTION, "NodeNotReachableError", "m", {"args": 5}], [p.ERR_EXCEPTION, "Nope", "y" * 10_000],
    [p.ERR_CRASH, 1, 2], ["unknown-kind", {"a": [1] * 1000}],
])
def test_a_hostile_error_reply_becomes_a_short_noex_error(details: Any) -> None:
    err = decode_error(details, "target")
    assert isinstance(err, NoexError)
    assert len(str(err)) < 4200  # a peer's message text is kept up to 4000 characters, its other values to 80


def test_a_typed_error_keeps_its_class_and_fields_but_no_private_attributes() -> None:
    sent = encode_error(NodeNotReachableError("n@h:1", "gone"))
    sent[3]["__class__"] = "spoofed"
    err = decode_error(sent, "target")
    assert type(err) is NodeNotReachableError and err.detail == "gone" and "gone" in str(err)


def _library_errors() -> list[type[NoexError]]:
    """Every NoexError subclass the runtime (core and distribution) defines."""
    for info in pkgutil.walk_packages(noex_lab.__path__, "noex_lab."):
        if info.name.startswith(("noex_lab.core", "noex_lab.distribution")):
            importlib.import_module(info.name)
    found: list[type[NoexError]] = []
    todo: list[type[NoexError]] = [NoexError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__.startswith(("noex_lab.core", "noex_lab.distribution"))]


def test_every_runtime_error_is_defined_in_the_errors_module_and_exported() -> None:
    errors = _library_errors()
    assert len(errors) > 30
    assert [cls.__qualname__ for cls in errors if cls.__module__ != "noex_lab.core.errors"] == []
    # exported from the public errors module (the everyday ones from `noex_lab` too:
    # tests/package/test_public_surface.py)
    assert [cls.__name__ for cls in errors if getattr(noex_lab.errors, cls.__name__, None) is not cls] == []
    assert [cls.__name__ for cls in errors if cls.__name__ not in noex_lab.errors.__all__] == []


@pytest.mark.parametrize("cls", _library_errors(), ids=lambda cls: cls.__name__)
def test_every_runtime_error_comes_back_with_its_own_class(cls: type[NoexError]) -> None:
    # (the three errors of a call travel in a form of their own: built with their own fields)
    own_form = {CallError: CallError("ValueError", "it went wrong"), CallTimeoutError: CallTimeoutError("x", 1.0),
                ServerNotRunningError: ServerNotRunningError("x", "it went wrong")}
    err = own_form.get(cls)
    if err is None:
        err = cls.__new__(cls)
        err.args = ("it went wrong",)
    back = decode_error(encode_error(err), "target")
    assert type(back) is cls and ("it went wrong" in str(back) or cls is CallTimeoutError)


def test_a_missing_system_handler_is_an_unknown_operation() -> None:
    back = decode_error(encode_error(UnknownOperationError("node n@h:1 has no system handler 'x'")), "target")
    assert isinstance(back, UnknownOperationError) and "no system handler" in str(back)


def test_public_calls_raise_typed_errors_not_bare_value_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="expected name@host:port"):
        NodeId.parse("nonsense")
    with pytest.raises(InvalidArgumentError, match="port"):
        NodeId("a", "h", 0)
    with pytest.raises(UnsupportedEventLoopError, match="running asyncio or trio"):
        current_loop_key()

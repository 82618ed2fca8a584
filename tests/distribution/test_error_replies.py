"""Error replies come from peers: rebuilding one never raises, whatever it holds, and a typed
error keeps its class and fields."""

from __future__ import annotations

from typing import Any

import pytest

from noex_lab import NodeNotReachableError, NoexError
from noex_lab.distribution import protocol as p
from noex_lab.distribution.routing import decode_error, encode_error


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

"""The connection handshake: protocol version, node ids, incarnations, fresh nonces,
and with a cluster secret mutual HMAC-SHA256 proofs over all of them.

Dialer (C) and acceptor (S):
    C -> S  HELLO   [version, c_id, c_incarnation, c_nonce, secured, hidden, heartbeat_ms]
    S -> C  WELCOME [version, s_id, s_incarnation, s_nonce, secured, proof_s, hidden, heartbeat_ms]
                                                                                or REFUSE [reason]
    C -> S  PROOF   [proof_c]                                                   or REFUSE [reason]
    S -> C  ACCEPT  []                                                          or REFUSE [reason]
`heartbeat_ms` is how often the sender's liveness thread sends heartbeats (peers allow for it).
`hidden` marks an observer node (e.g. `noex-lab top`): connected, but not listed as a member.
Both proofs cover both nonces, so a recorded handshake cannot be replayed: the acceptor's
nonce is fresh for every attempt. The frames are plain msgpack with tight size limits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

import msgpack

from ..core.errors import AuthenticationError
from ..core.node_id import NodeId
from .protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "PeerHello", "Refused", "decode", "encode", "parse_hello", "proof", "verify"]

HELLO, WELCOME, PROOF, ACCEPT, REFUSE = "hello", "welcome", "proof", "accept", "refuse"
MAX_HANDSHAKE_FRAME = 4096
NONCE_BYTES = 32


@dataclass(frozen=True)
class PeerHello:
    version: int
    node_id: NodeId
    incarnation: int
    nonce: bytes
    secured: bool
    hidden: bool = False
    heartbeat_ms: int = 0


class Refused(AuthenticationError):
    """The other side refused the handshake; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def proof(secret: bytes, role: bytes, c: PeerHello, s: PeerHello) -> bytes:
    """HMAC-SHA256 over the role, the version, both ids, incarnations, nonces and flags."""
    material = msgpack.packb([
        role, PROTOCOL_VERSION,
        str(c.node_id), c.incarnation, c.nonce, c.secured, c.hidden, c.heartbeat_ms,
        str(s.node_id), s.incarnation, s.nonce, s.secured, s.hidden, s.heartbeat_ms,
    ])
    return hmac.new(secret, material, hashlib.sha256).digest()


def verify(expected: bytes, got: Any) -> bool:
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


def encode(kind: str, *fields: Any) -> bytes:
    body: bytes = msgpack.packb([kind, *fields])
    return body


def decode(body: bytes) -> list[Any]:
    """Parse one handshake frame; anything malformed raises AuthenticationError."""
    try:
        value = msgpack.unpackb(
            body, max_bin_len=MAX_HANDSHAKE_FRAME, max_str_len=MAX_HANDSHAKE_FRAME,
            max_array_len=16, max_map_len=0, max_ext_len=0, strict_map_key=True,
        )
    except Exception as exc:
        raise AuthenticationError(f"malformed handshake frame ({type(exc).__name__})") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise AuthenticationError("malformed handshake frame")
    if value[0] == REFUSE:
        raise Refused(str(value[1]) if len(value) > 1 else "refused")
    return value


def parse_hello(fields: list[Any], expected_kind: str) -> PeerHello:
    """HELLO / WELCOME body -> PeerHello (raises AuthenticationError)."""
    if fields[0] != expected_kind or len(fields) < 6:
        raise AuthenticationError(f"expected {expected_kind}, got {fields[0]!r}")
    _, version, node_text, incarnation, nonce, secured = fields[:6]
    if version != PROTOCOL_VERSION:
        raise AuthenticationError(f"protocol version {version!r} is not {PROTOCOL_VERSION}")
    if not (isinstance(incarnation, int) and isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES):
        raise AuthenticationError("malformed hello")
    try:
        node_id = NodeId.parse(node_text)
    except (ValueError, TypeError) as exc:
        raise AuthenticationError(f"bad node id in hello: {exc}") from None
    hidden_at = 6 if expected_kind == HELLO else 7
    hidden = bool(fields[hidden_at]) if len(fields) > hidden_at else False
    beat = fields[hidden_at + 1] if len(fields) > hidden_at + 1 else 0
    heartbeat_ms = beat if isinstance(beat, int) and 0 <= beat <= 3_600_000 else 0
    return PeerHello(version, node_id, incarnation, nonce, bool(secured), hidden, heartbeat_ms)

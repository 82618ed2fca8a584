"""The connection handshake: protocol version, node ids, incarnations, fresh nonces, and with a
cluster secret mutual HMAC-SHA256 proofs over all of them, the dialer proving first.

Dialer (C) and acceptor (S):
    C -> S  HELLO   [version, c_id, c_incarnation, c_nonce, secured, hidden, heartbeat_ms]
    S -> C  WELCOME [version, s_id, s_incarnation, s_nonce, secured, hidden, heartbeat_ms]  or REFUSE [reason]
    C -> S  PROOF   [proof_c]                                                              or REFUSE [reason]
    S -> C  ACCEPT  [proof_s]                                                              or REFUSE [reason]
`heartbeat_ms` is how often the sender's liveness thread sends heartbeats (peers allow for it).
`hidden` marks an observer node (e.g. `noex-lab top`): connected, but not listed as a member.

Why this order: whoever can reach a node's port can dial it, so the acceptor sends its proof
only after the dialer proved it holds the key. A stranger who dials never receives a proof to
guess the secret from offline. (A dialer proves itself to the address it chose to dial: a seed,
or a member learned from authenticated gossip.)

The key is not the secret itself: `derive_key` runs scrypt (memory-hard, ~32 MiB and tens of
milliseconds) once per node start, so each guess of an attacker who recorded a proof costs the
same. Both proofs cover both nonces, so a recorded handshake cannot be replayed: the acceptor's
nonce is fresh for every attempt. Each connection also gets its own `session_key` (from the key
and both nonces) for authenticating the frames that follow. Handshake frames are plain msgpack
with tight size limits.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..core.errors import AuthenticationError
from ..core.errors import HandshakeRefusedError as Refused  # (the transport's name for it; defined in core.errors)
from ..core.node_id import NodeId
from .protocol import PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION", "PeerHello", "Refused", "decode", "derive_key", "encode", "parse_hello", "proof",
    "session_key", "verify",
]

HELLO, WELCOME, PROOF, ACCEPT, REFUSE = "hello", "welcome", "proof", "accept", "refuse"
MAX_HANDSHAKE_FRAME = 4096
NONCE_BYTES = 32

# scrypt parameters of the key derivation: a fixed, documented context (it is not a per-user salt:
# every node of a cluster must derive the same key from the same secret).
KDF_SALT = b"noex-lab/v3 cluster key"
KDF_N, KDF_R, KDF_P = 2**15, 8, 1  # 128 * N * r bytes = 32 MiB of memory per derivation
KDF_MAXMEM = 64 * 2**20
SESSION_LABEL = b"noex-lab/v3 session\x00"


@dataclass(frozen=True)
class PeerHello:
    version: int
    node_id: NodeId
    incarnation: int
    nonce: bytes
    secured: bool
    hidden: bool = False
    heartbeat_ms: int = 0


def new_nonce(token_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A handshake nonce; `token_bytes` is the node's (`node.entropy.token_bytes`)."""
    return token_bytes(NONCE_BYTES)


@functools.lru_cache(maxsize=16)
def derive_key(secret: bytes) -> bytes:
    """The handshake and heartbeat key of a cluster secret (scrypt; costly on purpose, so it runs
    once per node start: the cache spares several nodes of one process the repeated cost)."""
    return hashlib.scrypt(secret, salt=KDF_SALT, n=KDF_N, r=KDF_R, p=KDF_P, maxmem=KDF_MAXMEM, dklen=32)


def proof(key: bytes, role: bytes, c: PeerHello, s: PeerHello) -> bytes:
    """HMAC-SHA256 over the role, the version, both ids, incarnations, nonces and flags."""
    material = msgpack.packb([
        role, PROTOCOL_VERSION,
        str(c.node_id), c.incarnation, c.nonce, c.secured, c.hidden, c.heartbeat_ms,
        str(s.node_id), s.incarnation, s.nonce, s.secured, s.hidden, s.heartbeat_ms,
    ])
    return hmac.new(key, material, hashlib.sha256).digest()


def session_key(key: bytes, c: PeerHello, s: PeerHello) -> bytes:
    """The key of one connection: HMAC(key, label + dialer nonce + acceptor nonce). Both nonces
    are fresh, so no two connections share it."""
    return hmac.new(key, SESSION_LABEL + c.nonce + s.nonce, hashlib.sha256).digest()


def verify(expected: bytes, got: Any) -> bool:
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


def encode(kind: str, *fields: Any) -> bytes:
    body: bytes = msgpack.packb([kind, *fields])
    return body


def encode_hello(kind: str, me: PeerHello) -> bytes:
    """HELLO or WELCOME: the sender's side of the handshake (both have the same fields)."""
    return encode(kind, me.version, str(me.node_id), me.incarnation, me.nonce, me.secured, me.hidden,
                  me.heartbeat_ms)


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


def version_mismatch(fields: list[Any]) -> str | None:
    """The refusal to send when a HELLO / WELCOME speaks another protocol version, else None."""
    version = fields[1] if len(fields) > 1 else None
    if version == PROTOCOL_VERSION:
        return None
    return (f"protocol version {version!r}, this node speaks {PROTOCOL_VERSION} "
            "(run the same noex_lab release on every node)")


def parse_hello(fields: list[Any], expected_kind: str) -> PeerHello:
    """HELLO / WELCOME body -> PeerHello (raises AuthenticationError)."""
    if fields[0] != expected_kind or len(fields) < 6:
        raise AuthenticationError(f"expected {expected_kind}, got {fields[0]!r}")
    mismatch = version_mismatch(fields)
    if mismatch is not None:
        raise AuthenticationError(mismatch)
    _, version, node_text, incarnation, nonce, secured = fields[:6]
    if not (isinstance(incarnation, int) and isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES):
        raise AuthenticationError("malformed hello")
    try:
        node_id = NodeId.parse(node_text)
    except (ValueError, TypeError) as exc:
        raise AuthenticationError(f"bad node id in hello: {exc}") from None
    hidden = bool(fields[6]) if len(fields) > 6 else False
    beat = fields[7] if len(fields) > 7 else 0
    heartbeat_ms = beat if isinstance(beat, int) and 0 <= beat <= 3_600_000 else 0
    return PeerHello(version, node_id, incarnation, nonce, bool(secured), hidden, heartbeat_ms)

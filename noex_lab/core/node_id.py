"""`NodeId`: the `name@host:port` address of a node."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InvalidArgumentError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


def validate_node_name(name: str) -> str:
    """Return `name` if it is a valid node name, else raise InvalidArgumentError (a ValueError) saying why."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"invalid node name {name!r}: use a letter followed by up to 63 letters, "
            "digits, '_' or '-'"
        )
    return name


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """Immutable, hashable, ordered node address; ordering is used for deterministic tie-breaks."""

    name: str
    host: str
    port: int
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_node_name(self.name)
        if not isinstance(self.host, str) or not self.host:
            raise InvalidArgumentError(f"invalid host {self.host!r}: it must be a non-empty string")
        if ":" not in self.host and not _HOST.match(self.host):
            raise InvalidArgumentError(f"invalid host {self.host!r}")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 < self.port < 65536:
            raise InvalidArgumentError(f"invalid port {self.port!r}: it must be an integer in 1..65535")
        object.__setattr__(self, "_hash", hash((self.name, self.host, self.port)))

    # Node ids are dictionary keys on every message's path: hash once, compare identity first.
    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not NodeId:
            return NotImplemented
        return self._hash == other._hash and (self.name, self.host, self.port) == (
            other.name, other.host, other.port
        )

    def interned(self) -> NodeId:
        """The canonical instance equal to this one, so dictionary lookups hit by identity."""
        key = (self.name, self.host, self.port)
        canonical = _INTERNED.get(key)
        if canonical is None:
            if len(_INTERNED) >= 65536:
                _INTERNED.clear()
            canonical = _INTERNED[key] = self
        return canonical

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse `name@host:port` (IPv6 hosts in brackets: `n@[::1]:4369`)."""
        if isinstance(text, NodeId):
            return text
        known = _PARSED.get(text) if type(text) is str and cls is NodeId else None
        if known is not None:  # ids arrive again and again (every member list lists them all)
            return known
        if not isinstance(text, str) or "@" not in text:
            raise InvalidArgumentError(f"invalid node id {text!r}: expected name@host:port")
        name, _, rest = text.partition("@")
        if rest.startswith("["):
            host, sep, port_text = rest[1:].partition("]:")
            if not sep:
                raise InvalidArgumentError(f"invalid node id {text!r}: expected name@[ipv6]:port")
        else:
            host, sep, port_text = rest.rpartition(":")
            if not sep:
                raise InvalidArgumentError(f"invalid node id {text!r}: the port is missing")
            if ":" in host:
                raise InvalidArgumentError(f"invalid node id {text!r}: write IPv6 hosts in brackets")
        if not port_text.isdigit():
            raise InvalidArgumentError(f"invalid node id {text!r}: port {port_text!r} is not a number")
        node = cls(name, host, int(port_text)).interned()
        if cls is NodeId:
            if len(_PARSED) >= 65536:
                _PARSED.clear()
            _PARSED[text] = node
        return node

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}@{host}:{self.port}"

    def __repr__(self) -> str:
        return f"NodeId({str(self)!r})"


_INTERNED: dict[tuple[str, str, int], NodeId] = {}
_PARSED: dict[str, NodeId] = {}  # text -> NodeId.parse's result

"""Hand-driven peers for handshake tests: raw handshake frames over real TCP, and floods of idle
sockets, from a chosen loopback source address (all of 127.0.0.0/8 is loopback on Linux)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import resource
import socket
import struct
from typing import Any

import anyio
import anyio.abc
import msgpack

from noex_lab.core.node_id import NodeId
from noex_lab.distribution import handshake as hs


def hello(name: str, *, secured: bool = True, version: int = hs.PROTOCOL_VERSION) -> hs.PeerHello:
    return hs.PeerHello(version, NodeId(name, "127.0.0.1", 1), 7, hs.new_nonce(), secured)


class RawPeer:
    """One TCP connection that speaks handshake frames by hand."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self._buf = b""

    @classmethod
    async def connect(cls, port: int, *, source: str = "127.0.0.1") -> RawPeer:
        return cls(await anyio.connect_tcp("127.0.0.1", port, local_host=source))

    async def send(self, kind: str, *fields: Any) -> None:
        await self.send_body(hs.encode(kind, *fields))

    async def send_hello(self, me: hs.PeerHello) -> None:
        await self.send_body(hs.encode_hello(hs.HELLO, me))

    async def send_body(self, body: bytes) -> None:
        await self.stream.send(struct.pack(">I", len(body)) + body)

    async def receive(self, timeout: float = 3.0) -> list[Any] | None:
        """The next frame, decoded (a REFUSE too); None when the other side closed."""
        with anyio.fail_after(timeout):
            while True:
                if len(self._buf) >= 4:
                    (n,) = struct.unpack(">I", self._buf[:4])
                    if len(self._buf) >= 4 + n:
                        frame = msgpack.unpackb(self._buf[4:4 + n])
                        self._buf = self._buf[4 + n:]
                        return list(frame)
                try:
                    self._buf += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    return None

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


HIGH_FD = 4096


def open_idle(port: int, count: int, *, source: str = "127.0.0.1") -> list[socket.socket]:
    """`count` connections from `source` that never send a byte (connects complete in the kernel).

    Their descriptors are moved above HIGH_FD, so the test process's own sockets keep low numbers
    (select()-based code breaks past FD_SETSIZE = 1024); the soft RLIMIT_NOFILE is raised to fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = HIGH_FD + count + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(f"the flood needs {needed} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    socks = []
    try:
        for _ in range(count):
            low = socket.socket()
            try:
                high = fcntl.fcntl(low.fileno(), fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
            finally:
                low.close()
            s = socket.socket(fileno=high)
            socks.append(s)
            s.bind((source, 0))
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
    except BaseException:
        close_all(socks)
        raise
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    """Whether the other side closed (or reset) this idle connection."""
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        return exc.errno != errno.ENOTCONN  # ENOTCONN: still connecting


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()

"""A peer made by hand for hostile-input tests: the dialer's side of the real handshake over a
plain blocking socket, then whatever frames a test writes. Use it from a thread
(`anyio.to_thread.run_sync`): every read has a deadline."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from typing import Any

from noex_lab.core.node_id import NodeId
from noex_lab.distribution import handshake as hs
from noex_lab.distribution.codec import Codec
from noex_lab.distribution.framing import HEADER, FrameOpener, FrameReader, FrameSealer, frame_keys
from noex_lab.distribution.protocol import CALL, REPLY


class PeerClosed(Exception):
    """The node closed the connection."""


class RawPeer:
    """An authenticated (hidden) connection to the node listening on `port`."""

    def __init__(self, port: int, secret: str | None, name: str = "raw") -> None:
        self.node_id = NodeId(name, "127.0.0.1", 9)
        self.codec = Codec(self.node_id)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._reader = FrameReader(2**27)
        self._frames: list[bytes] = []
        self._req = 0
        secured = secret is not None
        me = hs.PeerHello(hs.PROTOCOL_VERSION, self.node_id, random.randrange(1, 2**31), hs.new_nonce(), secured,
                          True, 0)
        self._sealer: FrameSealer | None = None
        self._opener: FrameOpener | None = None
        self.send_frame(hs.encode_hello(hs.HELLO, me))
        welcome = hs.parse_hello(hs.decode(self.read_frame(10.0)), hs.WELCOME)
        key = hs.derive_key(secret.encode()) if secret is not None else None
        self.send_frame(hs.encode(hs.PROOF, hs.proof(key, b"C", me, welcome) if key is not None else b""))
        accept = hs.decode(self.read_frame(10.0))
        assert accept[0] == hs.ACCEPT, accept
        if key is not None:  # from here on every frame carries its MAC, both ways
            send, receive = frame_keys(hs.session_key(key, me, welcome), dialer=True)
            self._sealer, self._opener = FrameSealer(send), FrameOpener(receive)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def frame(self, body: bytes) -> bytes:
        """`body` as one frame on this connection (sealed once the handshake is done)."""
        return self._sealer.seal(body) if self._sealer is not None else HEADER.pack(len(body)) + body

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(self.frame(body))

    def send_message(self, message: list[Any]) -> None:
        self.send_frame(self.codec.encode(message))

    def send_raw(self, data: bytes) -> bool:
        """Write bytes as they are; False once the node has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ reading
    def read_frame(self, timeout: float) -> bytes:
        """The next frame body the node sent (PeerClosed at EOF, TimeoutError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame within {timeout} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                raise PeerClosed(str(exc)) from None
            if not data:
                raise PeerClosed("EOF")
            self._frames.extend(bytes(body) for body in self._reader.feed(data))
        body = self._frames.pop(0)
        # (opened when taken: frames read together with the handshake's last one come sealed)
        return bytes(self._opener.open(memoryview(body))) if self._opener is not None else body

    def call(self, pid: int, creation: int, msg: Any, timeout: float = 10.0) -> Any:
        """A GenServer call to process (pid, creation) of that node; its reply value."""
        self._req += 1
        req = self._req
        self.send_message([CALL, req, pid, creation, None, msg])
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            frame = self.read_frame(max(deadline - time.monotonic(), 0.001))
            unpacker = self.codec.stream_unpacker(len(frame) + 16)
            unpacker.feed(frame)
            for message in unpacker:
                if message[0] == REPLY and message[1] == req:
                    assert message[2], message
                    return message[3]
        raise AssertionError("no reply")

    def wait_closed(self, timeout: float) -> None:
        """Read (and drop) what the node sends until it closes the connection."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.read_frame(max(deadline - time.monotonic(), 0.001))
            except PeerClosed:
                return
            except TimeoutError:
                raise AssertionError(f"the node did not close the connection within {timeout} s") from None
            self._frames.clear()

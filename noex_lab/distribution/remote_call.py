"""`RemoteCall`: the seed's names for call and cast; they accept local refs too."""

from __future__ import annotations

from typing import Any

from ..core.node import Target, current_node


class RemoteCall:
    """`GenServer.call` / `GenServer.cast` under the names of the seed document."""

    @staticmethod
    async def call(ref: Target, msg: Any, *, timeout: float = 5.0) -> Any:
        return await current_node().call(ref, msg, timeout)

    @staticmethod
    def cast(ref: Target, msg: Any) -> None:
        current_node().cast(ref, msg)

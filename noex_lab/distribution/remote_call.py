"""`RemoteCall`: an alias, kept because the product contract (SPEC) names it: `RemoteCall.call`
and `RemoteCall.cast` are `GenServer.call` and `GenServer.cast` (they accept local refs too)."""

from __future__ import annotations

from typing import Any

from ..core.node import Target, current_node


class RemoteCall:
    """Alias of `GenServer.call` / `GenServer.cast` under the names of the product contract."""

    @staticmethod
    async def call(ref: Target, msg: Any, *, timeout: float = 5.0) -> Any:
        return await current_node().call(ref, msg, timeout)

    @staticmethod
    def cast(ref: Target, msg: Any) -> None:
        current_node().cast(ref, msg)

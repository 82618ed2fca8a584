"""Behaviors of the `noex-lab node` processes the `%noex attach` tests start (`--behaviors`)."""

from __future__ import annotations

from typing import Any

from noex_lab import BehaviorRegistry, DistributedSupervisor, GenServer, ProcessRef


class SupervisorHost(GenServer):
    """Starts a round_robin DistributedSupervisor on its node; a call returns its ref."""

    async def init(self, arg: Any) -> ProcessRef:
        return await DistributedSupervisor.start(node_selector="round_robin", max_restarts=50)

    def handle_call(self, msg: Any, state: ProcessRef) -> Any:
        return state, state


BehaviorRegistry.register("supervisor_host", SupervisorHost)

"""The curated public surface: each public module's `__all__` is pinned here (a name added or
removed is a decision, made in this file and in docs/reference/index.md), every name in it
imports, and every name has a `:::` entry in docs/reference that documents that very object."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"

SURFACE: dict[str, set[str]] = {
    "noex_lab": {
        # processes
        "Down", "ErrorReason", "Exit", "ExitReason", "From", "GenServer", "MonitorRef", "NoReply", "ProcessRef",
        "RemoteLink", "RemoteMonitor", "StateMachine", "Stop", "TimerRef", "current_node", "is_normal_exit",
        "running_nodes", "show_library_frames",
        # supervision
        "ChildInfo", "ChildSpec", "DistributedChildSpec", "DistributedSupervisor", "Supervisor",
        # names
        "GlobalConflict", "GlobalRegistry", "Group", "GroupEvent", "Registry",
        # the cluster
        "Cluster", "ClusterConfig", "Node", "NodeId", "NodeInfo", "NodeSnapshot", "ProcessInfo", "TLSConfig",
        "keep_majority", "keep_referee", "static_quorum",
        # remote work
        "BehaviorRegistry", "MultiCallResult", "RemoteCall", "RemoteSpawn", "Rpc", "Sys", "remote_function",
        "wire_type",
        # errors of everyday calls
        "AlreadyRegisteredError", "BehaviorNotFoundError", "CallError", "CallTimeoutError",
        "GlobalNameConflictError", "GlobalNameNotFoundError", "InitError", "MaxRestartsExceededError",
        "NodeNotReachableError", "NoexError", "NotRegisteredError", "RemoteError", "SerializationError",
        "ServerNotRunningError",
        # the package
        "__version__", "load_ipython_extension", "unload_ipython_extension",
    },
    "noex_lab.errors": {
        "AlreadyRegisteredError", "AuthenticationError", "BadReturnError", "BehaviorDefinitionError",
        "BehaviorNotFoundError", "CallError", "CallTimeoutError",
        "ClusterError", "CodeLoadingError", "DecodeError", "GlobalNameConflictError", "GlobalNameNotFoundError",
        "HandshakeRefusedError", "InitError", "InvalidArgumentError", "MailboxFullError",
        "MaxRestartsExceededError", "MissingExtraError", "NodeFencedError", "NodeNotReachableError",
        "NodeStoppedError", "NoexError", "NotPermittedError", "NotRegisteredError", "ProcessOutputError",
        "ProtocolError", "RemoteError", "RemoteFunctionError", "RemoteFunctionNotFoundError", "ReplaceStateError",
        "SecretFileError", "SendTimeoutError", "SerializationError", "ServerNotRunningError", "SupervisorError",
        "TooManyTracesError", "UnknownOperationError", "UnsupportedEventLoopError", "WaitTimeoutError",
    },
    "noex_lab.statem": {
        "EventTimeout", "GenericTimeout", "KeepState", "MachineState", "NextEvent", "Postpone", "RepeatState",
        "Reply", "StateMachine", "StateTimeout",
    },
    "noex_lab.introspection": {
        "EVENT_KINDS", "CrashReport", "EventInfo", "EventKind", "NodeEvent", "NodeSnapshot", "ProcessInfo",
        "ProcessListing", "ProcessState", "ProcessStatistics", "ProcessStatus", "SupervisorTree", "SuspendResult",
        "TraceEvent", "TraceHandle", "Upgrade", "UpgradeResult", "watch_cluster_crashes",
    },
    "noex_lab.faults": {"FaultControl", "Faults", "heal", "partition", "shape"},
    "noex_lab.policies": {"PartitionPolicy", "keep_majority", "keep_referee", "no_policy", "static_quorum"},
    "noex_lab.widgets": {
        "ClusterView", "EventLog", "FunctionSupervisorSource", "LocalSupervisorSource", "SupervisorSource",
        "SupervisorView", "TraceView",
    },
    "noex_lab.testing": {
        "FaultInjector", "NodeProcess", "WatchedProcess", "eventually", "kill_all_nodes", "kill_and_reap",
        "start_cluster", "start_node_processes", "wait_until", "wait_until_blocking",
    },
}

DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def _resolve(path: str) -> Any:
    """The object a `::: dotted.path` entry names (a module, or an attribute of one)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _documented() -> tuple[list[Any], list[ModuleType]]:
    """The objects and the (whole) modules the reference pages document."""
    objects: list[Any] = []
    modules: list[ModuleType] = []
    for page in sorted(REFERENCE.glob("*.md")):
        for path in DIRECTIVE.findall(page.read_text()):
            obj = _resolve(path)
            (modules if inspect.ismodule(obj) else objects).append(obj)
    return objects, modules


def test_the_public_modules_export_exactly_the_pinned_names() -> None:
    for module, names in SURFACE.items():
        exported = importlib.import_module(module).__all__
        assert len(exported) == len(set(exported)), f"{module}.__all__ has duplicates"
        assert set(exported) == names, f"{module}: added {set(exported) - names}, removed {names - set(exported)}"


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_public_name_imports_and_is_documented(module: str) -> None:
    mod = importlib.import_module(module)
    objects, modules = _documented()
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)  # an AttributeError here: a name in __all__ that does not import
        by_page = any(obj is documented for documented in objects)
        defined_in = getattr(obj, "__module__", None) if inspect.isclass(obj) or inspect.isroutine(obj) else None
        by_module = any(m.__name__ == defined_in for m in modules)
        if not (by_page or by_module):
            missing.append(name)
    assert missing == [], f"{module}: no `:::` entry in docs/reference documents {missing}"


def test_the_top_level_keeps_every_name_the_product_contract_promises() -> None:
    """SPEC: every public name it shows is importable from `noex_lab` (the others moved to the
    public submodules above, never out of reach)."""
    import noex_lab

    promised = {
        "GenServer", "ProcessRef", "NodeId", "InitError", "CallTimeoutError", "ServerNotRunningError",
        "NodeNotReachableError", "CallError", "NoReply", "Stop", "TimerRef", "ErrorReason", "is_normal_exit",
        "RemoteMonitor", "MonitorRef", "Down", "Exit", "RemoteLink", "Supervisor", "ChildSpec", "ChildInfo",
        "MaxRestartsExceededError", "Registry", "AlreadyRegisteredError", "NotRegisteredError", "Cluster", "Node",
        "NodeInfo", "RemoteCall", "wire_type", "SerializationError", "RemoteError", "BehaviorRegistry",
        "RemoteSpawn", "BehaviorNotFoundError", "GlobalNameConflictError", "GlobalRegistry",
        "GlobalNameNotFoundError", "DistributedSupervisor", "keep_majority", "static_quorum", "keep_referee",
        "NodeSnapshot", "ProcessInfo", "NoexError",
    }
    assert promised <= set(noex_lab.__all__)
    for name in promised & set(dir(noex_lab.distribution)):
        assert getattr(noex_lab.distribution, name) is getattr(noex_lab, name)  # also from noex_lab.distribution

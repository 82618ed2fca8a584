"""Shipping behaviors defined in notebook cells to the cluster (`%%noex behavior NAME`).

The kernel keeps the latest source of every behavior defined with the cell magic and sends it
(remote operation `code.load_behavior`) to every connected node, and to every node that joins
later. A node loads it only if it accepts code (`allow_code` plus an authenticated link; the
nodes `%noex local` starts do); a node that refuses says why, and the cell shows it.
Re-running the cell ships the new source, which replaces the old behavior everywhere and
upgrades the processes running it at their next message (hot upgrade, `core/upgrade.py`). A node
that has a behavior of that name from its own modules (`--behaviors`) keeps it unless the cell
asks to replace it (`%%noex behavior NAME --replace`).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.errors import NoexError, UnknownOperationError
from ..core.events import EventKind
from ..core.genserver import GenServer
from ..core.node import Node
from ..core.node_id import NodeId
from ..distribution.attached import distribution_of
from .errors import LabError
from .reprs import Status, Table

SHIP_TIMEOUT_S = 10.0
# the file name `code_loading.load_behavior_source` gives shipped source on the node that loads it
_SHIPPED_FILE = re.compile(r"^<behavior '(?P<name>[^']+)' from (?P<origin>[^>]+)>$")


class BehaviorCellError(LabError):
    """The cell of `%%noex behavior` does not define exactly one usable GenServer subclass."""


@dataclass(frozen=True)
class ShippedBehavior:
    name: str
    source: str
    class_name: str
    version: int
    replace: bool = False  # also replace a behavior a node loaded from its own modules
    cell: int | None = None  # the In[n] of the %%noex behavior cell that defined it


@dataclass(frozen=True)
class ShipResult:
    node: NodeId
    behavior: str
    version: int
    ok: bool
    detail: str


def defined_classes(source: str) -> list[str]:
    """Names of the classes a cell defines at its top level, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)]


def pick_behavior(name: str, source: str, namespace: dict[str, Any]) -> type[GenServer]:
    """The GenServer subclass the cell defines (the one named like NAME if it defines several)."""
    candidates = []
    for cls_name in defined_classes(source):
        cls = namespace.get(cls_name)
        if isinstance(cls, type) and issubclass(cls, GenServer) and cls not in candidates:
            candidates.append(cls)
    if not candidates:
        raise BehaviorCellError(
            f"the cell defines no GenServer subclass at its top level, so there is nothing to register as {name!r}"
        )
    if len(candidates) == 1:
        return candidates[0]

    def norm(text: str) -> str:
        return text.replace("_", "").replace("-", "").lower()

    named = [c for c in candidates if norm(c.__name__) == norm(name)]
    if len(named) == 1:
        return named[0]
    raise BehaviorCellError(
        f"the cell defines several GenServer subclasses ({', '.join(c.__name__ for c in candidates)}); "
        f"name one of them {name!r}, or define one behavior per cell"
    )


def refusal_text(node_id: NodeId, exc: BaseException) -> str:
    """Why `node_id` refused a shipment, from the typed error its reply was rebuilt as."""
    if isinstance(exc, UnknownOperationError):
        return f"node {node_id} does not accept code (its noex_lab cannot load behaviors)"
    return str(exc)


def upgrade_text(upgraded: int, failed: int, pending: int, errors: list[str]) -> str:
    """What became of the running processes of a re-shipped behavior ("" when there were none)."""
    parts = []
    if upgraded:
        parts.append(f"{upgraded} process{'es' if upgraded != 1 else ''} upgraded")
    if pending:
        parts.append(f"{pending} busy in a callback (upgrade{'s' if pending != 1 else ''} when it returns)")
    if failed:
        parts.append(f"{failed} kept the old code: code_change raised ({'; '.join(errors)})")
    return ", ".join(parts)


def loaded_text(loaded: Any) -> str:
    """The detail of a successful shipment (a node of an older version answers the class name only)."""
    if isinstance(loaded, list) and len(loaded) == 5:
        extra = upgrade_text(int(loaded[1]), int(loaded[2]), int(loaded[3]), [str(e) for e in loaded[4]])
        return f"loaded {loaded[0]}" + (f"; {extra}" if extra else "")
    return f"loaded {loaded}"


class CodeShipper:
    """The behaviors defined in this kernel, and where each version was loaded or refused."""

    def __init__(self, report: Callable[[EventKind, dict[str, Any]], None]) -> None:
        self.report = report  # (event kind, data): into the kernel node's event stream
        self.behaviors: dict[str, ShippedBehavior] = {}
        self.results: dict[tuple[NodeId, str], ShipResult] = {}
        self._versions = 0
        self._pending: dict[NodeId, asyncio.Task[list[ShipResult]]] = {}
        self._attached: dict[Node, Callable[[], None]] = {}

    def define(self, name: str, source: str, class_name: str, *, replace: bool = False,
               cell: int | None = None) -> ShippedBehavior:
        self._versions += 1
        behavior = ShippedBehavior(name, source, class_name, self._versions, replace, cell)
        self.behaviors[name] = behavior
        return behavior

    def label(self, filename: str) -> str | None:
        """`Cell In[n]` for the file name a node gave the source of a behavior shipped from here
        (a traceback labeler, see `noex_lab.core.tracebacks`)."""
        m = _SHIPPED_FILE.match(filename)
        if m is None:
            return None
        behavior = self.behaviors.get(m["name"])
        if behavior is None or behavior.cell is None:
            return None
        return f"Cell In[{behavior.cell}] (%%noex behavior {behavior.name})"

    # --------------------------------------------------------------- shipping
    async def _ship_one(self, node: Node, peer: NodeId, behavior: ShippedBehavior) -> ShipResult:
        dist = distribution_of(node)
        try:
            if dist is None:
                raise NoexError("this kernel's node is not distributed")
            loaded = await dist.router.rpc(
                peer, "code.load_behavior", [behavior.name, behavior.source, behavior.class_name, behavior.replace],
                SHIP_TIMEOUT_S,
            )
            result = ShipResult(peer, behavior.name, behavior.version, True, loaded_text(loaded))
        except NoexError as exc:
            result = ShipResult(peer, behavior.name, behavior.version, False, refusal_text(peer, exc))
        current = self.results.get((peer, behavior.name))
        if current is None or current.version <= behavior.version:
            self.results[(peer, behavior.name)] = result
        return result

    async def ship(self, node: Node, behavior: ShippedBehavior) -> list[ShipResult]:
        """Send `behavior` to every connected peer (concurrently); one result per peer."""
        peers = [info.id for info in node.get_nodes()]
        results = list(await asyncio.gather(*(self._ship_one(node, p, behavior) for p in peers)))
        return sorted(results, key=lambda r: r.node)

    async def ship_all_to(self, node: Node, peer: NodeId) -> list[ShipResult]:
        """Send every behavior (in definition order) to one peer."""
        results = []
        for behavior in sorted(self.behaviors.values(), key=lambda b: b.version):
            result = await self._ship_one(node, peer, behavior)
            results.append(result)
            self.report(
                "behavior_shipped" if result.ok else "behavior_refused",
                {"name": behavior.name, "peer": peer, "detail": result.detail},
            )
        return results

    async def wait_peer(self, node: Node, peer: NodeId) -> list[ShipResult]:
        """Wait for the shipping a newly joined peer gets (start it if it was not started)."""
        task = self._pending.get(peer)
        if task is not None:
            return await asyncio.shield(task)
        return await self.ship_all_to(node, peer)

    def attach(self, node: Node) -> None:
        """Ship every behavior to each node that joins `node`'s cluster from now on."""
        if node in self._attached or node.distribution is None:
            return

        def on_up(info: Any) -> None:
            if not self.behaviors:
                return
            peer: NodeId = info.id
            task = asyncio.get_running_loop().create_task(self.ship_all_to(node, peer))
            self._pending[peer] = task

            def done(t: asyncio.Task[list[ShipResult]]) -> None:
                if self._pending.get(peer) is t:
                    del self._pending[peer]
                if not t.cancelled() and t.exception() is not None:
                    self.report("error", {"what": f"shipping behaviors to {peer} failed",
                                          "error": repr(t.exception())})

            task.add_done_callback(done)

        self._attached[node] = node.on_node_up(on_up)

    def detach_all(self) -> None:
        for unsubscribe in self._attached.values():
            with contextlib.suppress(Exception):
                unsubscribe()
        self._attached.clear()
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()

    # --------------------------------------------------------------- reporting
    def table(self, results: list[ShipResult] | None = None) -> Table:
        rows: list[list[Any]]
        if results is not None:
            rows = [[r.node, Status("loaded" if r.ok else "refused"), r.detail] for r in results]
            return Table(["node", "status", "detail"], rows, empty="(no other nodes connected yet)")
        rows = []
        for (peer, name), r in sorted(self.results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            behavior = self.behaviors.get(name)
            stale = behavior is not None and r.version < behavior.version
            status = "loaded" if r.ok and not stale else ("stale" if r.ok else "refused")
            rows.append([name, peer, Status(status), r.detail])
        for name in sorted(self.behaviors):
            if not any(key[1] == name for key in self.results):
                rows.append([name, None, Status("local only"), "no other node connected"])
        return Table(["behavior", "node", "status", "detail"], rows, title="behaviors defined in this notebook",
                     empty="(none: define one with %%noex behavior NAME)")

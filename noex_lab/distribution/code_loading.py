"""Receiving behavior source shipped from a peer (`%%noex behavior`): only with
allow_code and a cluster_secret, from the nodes allow_code_from names.

A node accepts code only when it opted in (`allow_code=True`, `--allow-code`) and its links are
authenticated (it has a `cluster_secret`, so every peer passed the HMAC handshake); with
`allow_code_from=[ids]` (`--allow-code-from ID`) only from those nodes. The source runs in a
fresh module named after the behavior; the `GenServer` subclass it defines is registered in
`BehaviorRegistry` under that name. It replaces an earlier *shipped* version (a re-run cell)
freely, but a behavior the node's operator loaded (`--behaviors`, or registered in code) only
when the shipper asks for it (`replace`), so a notebook never silently swaps production code.

Hot upgrade: when a shipped version replaces an earlier shipped one (a re-run cell), every
process of this node running shipped code of that behavior switches to the new class at its
next message, keeping its state (`code_change` migrates it; see `core/upgrade.py`). Processes
running the node's own code are never swapped: after `replace`, only new ones run shipped code.

Remote operation: `code.load_behavior [name, source, class_name, replace]` -> `[class name,
upgraded, failed, pending, [error, ...]]`: the processes switched, those that kept their old
code because `code_change` raised, and those still busy in a callback after
UPGRADE_REPORT_WAIT_S (they switch when it returns). `replace` may be left out: False.
"""

from __future__ import annotations

import linecache
import re
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import BehaviorNotFoundError
from ..core.errors import CodeLoadingError as CodeLoadingError  # (defined in core.errors, re-exported)
from ..core.genserver import GenServer
from ..core.node_id import NodeId
from ..core.upgrade import set_source, upgrade_processes
from .behaviors import BehaviorRegistry
from .service import Operation, Service

if TYPE_CHECKING:
    from .cluster import Distribution

MODULE_PREFIX = "noex_lab_shipped"
UPGRADE_REPORT_WAIT_S = 1.0  # how long a load waits for its upgrades before reporting the rest pending


def module_name(behavior_name: str) -> str:
    """The module the source of `behavior_name` is loaded into (a valid dotted name)."""
    slug = re.sub(r"\W", "_", behavior_name)
    if not slug or slug[0].isdigit():
        slug = "_" + slug
    return f"{MODULE_PREFIX}.{slug}"


def load_behavior_source(name: str, source: str, class_name: str, *, origin: str = "peer") -> type[GenServer]:
    """Run `source` in a fresh module and return its `GenServer` subclass `class_name`."""
    modname = module_name(name)
    filename = f"<behavior {name!r} from {origin}>"
    module = types.ModuleType(modname)
    module.__file__ = filename
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    previous = sys.modules.get(modname)
    sys.modules[modname] = module  # dataclasses and typing look their module up while the class is built
    try:
        code = compile(source, filename, "exec")
        exec(code, module.__dict__)
    except BaseException as exc:
        if previous is not None:
            sys.modules[modname] = previous
        else:
            sys.modules.pop(modname, None)
        raise CodeLoadingError(f"the source of behavior {name!r} failed here: {type(exc).__name__}: {exc}") from exc
    cls = module.__dict__.get(class_name)
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise CodeLoadingError(f"the source of behavior {name!r} defines no GenServer subclass {class_name!r}")
    set_source(cls, source)  # its version fingerprint, the same as in the shipping kernel
    return cls


def is_shipped(cls: type) -> bool:
    """Whether `cls` came from shipped source (rather than from the node's own modules)."""
    return str(getattr(cls, "__module__", "")).startswith(MODULE_PREFIX + ".")


async def handle_load_behavior(dist: Distribution, peer: NodeId, args: Any) -> list[Any]:
    """`code.load_behavior`: refuse unless this node accepts code over authenticated links from `peer`."""
    config = dist.config
    if not config.allow_code:
        raise CodeLoadingError(
            f"node {dist.node_id} does not accept code: it was started without allow_code=True (--allow-code)"
        )
    if config.secret is None:
        raise CodeLoadingError(
            f"node {dist.node_id} does not accept code: its links are not authenticated (no cluster_secret)"
        )
    if config.allow_code_from and peer not in config.allow_code_from:
        allowed = ", ".join(map(str, config.allow_code_from))
        raise CodeLoadingError(
            f"node {dist.node_id} accepts code only from {allowed} (--allow-code-from), not from {peer}"
        )
    if (not isinstance(args, list) or len(args) not in (3, 4) or not all(isinstance(a, str) for a in args[:3])
            or (len(args) == 4 and not isinstance(args[3], bool))):
        raise CodeLoadingError("malformed behavior shipment")
    name, source, class_name = (str(a) for a in args[:3])
    replace = len(args) == 4 and args[3]
    try:
        existing: type | None = BehaviorRegistry.get(name)
    except BehaviorNotFoundError:
        existing = None
    if existing is not None and not is_shipped(existing) and not replace:
        raise CodeLoadingError(
            f"node {dist.node_id} already has behavior {name!r} ({existing.__module__}.{existing.__qualname__}) "
            "from its own modules; shipped code replaces it only when asked to (%%noex behavior NAME --replace)"
        )
    cls = load_behavior_source(name, source, class_name, origin=str(peer))
    BehaviorRegistry.register(name, cls)
    dist.node.events.emit("behavior_loaded", name=name, behavior=class_name, origin=peer)
    if existing is None or not is_shipped(existing):
        return [class_name, 0, 0, 0, []]
    upgrade = upgrade_processes([dist.node], name, cls, which=is_shipped)
    results = await upgrade.wait(UPGRADE_REPORT_WAIT_S) if upgrade.requested else []
    count = {o: sum(1 for r in results if r.outcome == o) for o in ("upgraded", "failed", "pending")}
    errors = [f"{r.ref}: {r.error}" for r in results if r.outcome == "failed"][:5]
    return [class_name, count["upgraded"], count["failed"], count["pending"], errors]


class CodeLoading(Service):
    """The `code` service: `code.load_behavior` (it refuses unless `allow_code`)."""

    namespace = "code"

    def __init__(self, dist: Distribution) -> None:
        self.dist = dist

    def operations(self) -> Mapping[str, Operation]:
        return {"load_behavior": self.load_behavior}

    async def load_behavior(self, peer: NodeId, args: Any) -> list[Any]:
        return await handle_load_behavior(self.dist, peer, args)

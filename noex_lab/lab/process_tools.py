"""`%noex upgrade`, `suspend`, `resume`, `replace-state`, `stats` and `status`: the notebook's
side of hot upgrades and of the live process tools (`Sys`, OTP's `sys`).

Kept apart from `magics.py` and `session.py`: those only add the parsers and dispatch here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import NoexError
from ..core.node_id import NodeId
from ..distribution.behaviors import BehaviorRegistry
from ..distribution.sys_tools import VERSION_COLUMNS, Sys, versions
from .errors import LabError
from .reprs import Message, Status, Table

if TYPE_CHECKING:
    from IPython.core.magic_arguments import MagicArgumentParser

    from .session import LabSession

TOOL_SUBCOMMANDS = frozenset({"upgrade", "suspend", "resume", "replace-state", "stats", "status"})


def add_tool_parsers(parsers: dict[str, MagicArgumentParser],
                     make: Callable[[str, str, str], MagicArgumentParser]) -> None:
    """Add the subcommands of this module to `%noex`'s parsers."""
    s = parsers["upgrade"] = make(
        "upgrade", "Which process runs which version of a behavior, on every node (hot upgrades: re-running "
        "its %%noex behavior cell upgrades them at their next message, keeping their state; see "
        "docs/concepts/hot-upgrade.md). Without NAME: every behavior registered in BehaviorRegistry.",
        "upgrade [NAME]")
    s.add_argument("name", nargs="?", help="the behavior name (as in %%%%noex behavior NAME)")

    def target(name: str, text: str, usage: str) -> MagicArgumentParser:
        parser = parsers[name] = make(name, text, usage)
        parser.add_argument("target", help="a process ref like <0.12@n@127.0.0.1:5000>, a local or a global name")
        parser.add_argument("--node", help="look a local name up on this node")
        return parser

    target("suspend", "Suspend a process, local or remote (like OTP's sys:suspend): from its next message on it "
           "handles none (they queue up) until %noex resume; its state can still be read and replaced, and stop "
           "and kill still work.", "suspend TARGET [--node NODE]")
    target("resume", "Resume a suspended process: it handles its queued messages again.",
           "resume TARGET [--node NODE]")
    s = target("replace-state", "Replace a process's state with FUNCTION(state), between two messages (like "
               "OTP's sys:replace_state). FUNCTION is a Python expression of this notebook: a lambda or the name "
               "of a function. For a remote process it runs here, on its state sent over.",
               "replace-state TARGET FUNCTION [--node NODE]")
    s.add_argument("function", help='e.g. "lambda state: {**state, \'limit\': 10}"')
    s = target("stats", "A process's statistics: messages in and out, time spent in its handlers, mailbox "
               "high-water mark, restarts (like OTP's sys:statistics). Counting messages out and handler time "
               "is opt-in: --on starts it, --off stops it (it costs nothing while off).",
               "stats TARGET [--on | --off] [--node NODE]")
    group = s.add_mutually_exclusive_group()
    group.add_argument("--on", action="store_true", help="start counting messages out and handler time")
    group.add_argument("--off", action="store_true", help="stop counting")
    target("status", "Everything about a process at once (like OTP's sys:get_status): behavior and version, "
           "status, queue, links, statistics, state.", "status TARGET [--node NODE]")


async def run_tool(session: LabSession, subcommand: str, args: argparse.Namespace,
                   user_ns: dict[str, Any]) -> list[Any]:
    """Run one subcommand of this module; returns what to display."""
    if subcommand == "upgrade":
        return [await upgrade_table(session, args.name)]
    node = session.kernel_node()
    on: NodeId | None = session.resolve_node(args.node) if args.node is not None else None
    target = session.parse_target(args.target)
    if subcommand == "suspend":
        result = await Sys.suspend(target, on=on, node=node)
        word = "suspended" if result.changed else "already suspended"
        return [Message(f"{result.ref} {word}; {result.queue_len} message(s) queued (%noex resume "
                        f"{args.target} lets it go on)", "ok" if result.changed else "info")]
    if subcommand == "resume":
        result = await Sys.resume(target, on=on, node=node)
        word = "resumed" if result.changed else "was not suspended"
        level = "ok" if result.changed else "info"
        return [Message(f"{result.ref} {word}; {result.queue_len} message(s) queued", level)]
    if subcommand == "replace-state":
        try:
            fn = eval(args.function, user_ns)  # the notebook's own expression, in its own namespace
        except Exception as exc:
            raise LabError(f"cannot evaluate FUNCTION {args.function!r}: {type(exc).__name__}: {exc}") from None
        if not callable(fn):
            raise LabError(f"FUNCTION {args.function!r} is {fn!r}, not a function of the state")
        return [await Sys.replace_state(target, fn, on=on, node=node)]
    if subcommand == "stats":
        enable = True if args.on else (False if args.off else None)
        return [await Sys.statistics(target, enable, on=on, node=node)]
    if subcommand == "status":
        return [await Sys.get_status(target, on=on, node=node)]
    raise LabError(f"unknown subcommand {subcommand!r}")  # pragma: no cover


async def upgrade_table(session: LabSession, name: str | None) -> Table:
    """Every process of behavior `name` (or of every behavior) on every node, and its version."""
    node = session.kernel_node()
    if name is not None and name not in BehaviorRegistry.names():
        known = ", ".join(BehaviorRegistry.names()) or "none"
        raise LabError(f"no behavior {name!r} is registered in this kernel (registered: {known})")
    rows: list[list[Any]] = []
    for where in [None, *(info.id for info in node.get_nodes())]:
        label = where if where is not None else (node.id or node.display_name)
        try:
            found = await versions(name, where, node=node)
        except NoexError as exc:
            rows.append([label, "", "", "", "", "", Status("unreachable"), str(exc)])
            continue
        rows.extend([label, *r[:5], Status(r[5]), r[6]] for r in found)
    current = sum(1 for r in rows if r[6] == "current")
    what = f"behavior {name!r}" if name is not None else "every behavior"
    return Table(["node", *VERSION_COLUMNS], rows, title=f"versions of {what}",
                 note=f"{len(rows)} process(es): {current} on the current code, {len(rows) - current} not",
                 empty="(no process runs it)")

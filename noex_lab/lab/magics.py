"""`%noex` / `%%noex`: the notebook's command line for a noex_lab cluster.

No cell needs `await`: an input transformer rewrites an exact top-level line
`get_ipython().run_line_magic('noex', ...)` (what IPython makes of `%noex ...`, also after
`x = `) and `get_ipython().run_cell_magic('noex', ...)` into an awaited call, so the kernel
runs that cell as an async cell and the magic may return an awaitable. Called any other way
(inside a loop, from a function, or in the cell that runs `%load_ext noex_lab`, which IPython
transformed before the transformer existed), the magic still works: the returned tasks run in the
background one after the other, in the order of the lines (a line whose predecessor failed does not
run), and an error is shown under the cell that issued the line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import re
import shlex
import sys
import textwrap
import weakref
from collections.abc import Callable, Coroutine, Generator
from types import FrameType
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser, argument, kwds, magic_arguments

from ..core.errors import NoexError
from ..core.node import Node
from ..core.node_id import NodeId
from ..core.refs import ProcessRef
from ..core.snapshot import SORT_KEYS
from ..core.timeouts import seconds_argument
from ..distribution.behaviors import BehaviorRegistry
from ..frontend.options import add_cluster_arguments, cluster_options
from . import fault_commands
from .code_shipping import pick_behavior
from .errors import LabError, MagicUsageError
from .process_tools import TOOL_SUBCOMMANDS, add_tool_parsers, run_tool
from .reprs import Message, display, register_reprs, unregister_reprs
from .session import PS_LIMIT, LabSession

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

# --------------------------------------------------------------------------------- the transformer
_AWAITABLE_LINE = re.compile(
    r"^(?P<assign>[A-Za-z_][A-Za-z0-9_]*\s*=\s*)?(?P<call>get_ipython\(\)\.run_(?:line|cell)_magic\('noex', .*\))"
    r"(?P<end>\s*)$",
    re.DOTALL,
)


def await_noex_magics(lines: list[str]) -> list[str]:
    """`input_transformers_post` hook: await exact top-level `%noex` calls (see module doc)."""
    out = []
    for line in lines:
        m = _AWAITABLE_LINE.match(line)
        if m is None:
            out.append(line)
        else:
            out.append(f"{m.group('assign') or ''}await {m.group('call')}{m.group('end')}")
    return out


# --------------------------------------------------------------------------------- subcommands
def _parser(name: str, help_text: str, usage: str) -> MagicArgumentParser:
    # argparse %-formats usage strings, and IPython's help formatter prints the '%' in front
    parser: MagicArgumentParser = MagicArgumentParser(  # type: ignore[no-untyped-call]
        prog=f"noex {name}", description=help_text, usage=f"noex {usage}"
    )
    return parser


def _build_parsers() -> dict[str, MagicArgumentParser]:
    p: dict[str, MagicArgumentParser] = {}
    s = p["start"] = _parser(
        "start", "Start this kernel's node (re-running reuses a node of the same name and says so). Without "
        "--secret-env it uses the per-user secret ($XDG_CONFIG_HOME/noex-lab/secret, created on first use), "
        "as `noex-lab node` and `noex-lab top` do; nodes started by `%noex local` get it, so every link is "
        "authenticated. Errors (port in use, bad seed) are raised in the cell.",
        "start NAME [--port P] [--host H] [--advertise-host A] [--seed ID ...] [--secret-env VAR]")
    s.add_argument("name", help="node name: a letter, then letters, digits, _ or -")
    add_cluster_arguments(s, port=0, insecure=False)
    s.add_argument("--secret-env", metavar="VAR", help="environment variable holding the cluster secret")

    s = p["local"] = _parser(
        "local", "Make sure N local node processes run, joined to this kernel's node (starts only the "
        "missing ones). They accept behaviors from `%%noex behavior` (from this kernel's node only, unless "
        "--code-from-any), survive the stop button and exit with the kernel (also when it is killed). Their "
        "output goes to the event log.", "local N [--prefix P] [--code-from-any]")
    s.add_argument("count", type=int, metavar="N", help="how many local nodes should run")
    s.add_argument("--prefix", default="local", help="node names are PREFIX1, PREFIX2, ... (default local)")
    s.add_argument("--code-from-any", action="store_true",
                   help="the new nodes accept behaviors from any node with the secret, not only this kernel's")

    s = p["remote"] = _parser(
        "remote", "Make sure N node processes run on HOST, started over SSH (the system's ssh client, never "
        "prompting: set up key login first) and joined to this kernel's node. The cluster secret goes over the "
        "SSH channel; they accept behaviors like local nodes and exit with the kernel, or when the SSH "
        "connection drops. HOST must reach this kernel's node: start it with --host 0.0.0.0 --advertise-host "
        "ADDRESS for another machine. See docs/guides/remote-nodes.md.",
        "remote HOST N [--user U] [--python PATH] [--workdir DIR] [--prefix P] [--advertise-host H] "
        "[--ssh-option OPT ...] [--ssh-config FILE]")
    s.add_argument("host", metavar="HOST", help="a host name, address or ssh config alias ([USER@]HOST)")
    s.add_argument("count", type=int, metavar="N", help="how many nodes should run on HOST")
    s.add_argument("--user", help="the SSH login (default: ssh's, from your ssh config)")
    s.add_argument("--python", metavar="PATH",
                   help="Python with noex_lab installed on HOST (default: this kernel's interpreter path)")
    s.add_argument("--workdir", metavar="DIR", help="directory the nodes run in on HOST (importable: --behaviors)")
    s.add_argument("--prefix", default="remote", help="node names are PREFIX1, PREFIX2, ... (default remote)")
    s.add_argument("--advertise-host", metavar="H",
                   help="address the nodes are dialed at (default: HOST; they listen on every address of HOST)")
    s.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="an ssh -o option, e.g. Port=2222 or IdentityFile=~/.ssh/lab (repeatable)")
    s.add_argument("--ssh-config", metavar="FILE", help="an ssh config file (ssh -F)")
    s.add_argument("--code-from-any", action="store_true",
                   help="the new nodes accept behaviors from any node with the secret, not only this kernel's")

    s = p["attach"] = _parser(
        "attach", "Attach this kernel to a running cluster as a hidden observer (like noex-lab top): every "
        "command and view sees the whole cluster, but the members do not list it, place no children on it, "
        "and it registers no global names. --member joins as a full member instead (with a warning).",
        "attach SEED [--secret-env VAR] [--member] [--name NAME]")
    s.add_argument("seed", metavar="SEED", help="any member's node id, name@host:port")
    s.add_argument("--secret-env", metavar="VAR",
                   help="environment variable holding the cluster secret (default: the per-user secret file)")
    s.add_argument("--member", action="store_true", help="join as a full member, not a hidden observer")
    s.add_argument("--name", help="this kernel's node name (default observer-PID)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--advertise-host", metavar="A", help="address the members reach this kernel at")
    s.add_argument("--timeout", type=seconds_argument, default=10.0, help="wait for a member (default 10 s)")

    p["detach"] = _parser("detach", "Leave the cluster %noex attach joined: the members see only the "
                          "connections close.", "detach")

    s = p["kill"] = _parser("kill", "SIGKILL a local node (a crash: peers see the connection drop); for this "
                            "kernel's own node, node.kill() (fault injection).", "kill NODE")
    s.add_argument("node", help="a local or remote node's name or id")

    s = p["partition"] = _parser(
        "partition", "Cut the network between two groups of nodes, like a pulled cable (--mode blackhole, the "
        "default: nothing crosses, not even a close, so each side sees the other down only after the heartbeat "
        "timeout) or with a reset (--mode reset: connections close at once). --one-way cuts only what the first "
        "group sends: the second stops hearing it. Other nodes get the rules by system request (local and remote "
        "nodes allow it). %noex heal undoes it.", "partition A,B C,D [--mode blackhole|reset] [--one-way]")
    s.add_argument("side_a", metavar="A,B", help="the nodes of one side, by name or id, comma-separated")
    s.add_argument("side_b", metavar="C,D", help="the nodes of the other side")
    s.add_argument("--mode", default="blackhole", choices=["blackhole", "reset"],
                   help="blackhole (default): silent cut; reset: connections closed at once")
    s.add_argument("--one-way", action="store_true", help="cut only A,B -> C,D (C,D stops hearing A,B)")

    s = p["heal"] = _parser("heal", "Remove the fault rules (partitions, link shaping) of the given nodes, by "
                            "default of every node this notebook gave rules: the links come back.", "heal [NODE ...]")
    s.add_argument("nodes", nargs="*", metavar="NODE", help="node names or ids (default: all this notebook touched)")

    s = p["link"] = _parser(
        "link", "Make the link between NODE and OTHER (default: this kernel's node) slow or lossy, both ways: "
        "latency, plus a jitter drawn in 0..J ms (TCP keeps the order), and a loss rate (heartbeats are lost; "
        "TCP data is never lost, a lost segment waits a retransmission timeout). All zero: back to normal.",
        "link NODE [OTHER] [--latency-ms MS] [--jitter-ms MS] [--loss FRACTION]")
    s.add_argument("node", metavar="NODE", help="node name or id")
    s.add_argument("other", nargs="?", metavar="OTHER", help="the other end (default: this kernel's node)")
    s.add_argument("--latency-ms", type=float, default=0.0, help="added one-way delay (default 0)")
    s.add_argument("--jitter-ms", type=float, default=0.0, help="extra delay drawn in 0..J ms (default 0)")
    s.add_argument("--loss", type=float, default=0.0, help="fraction lost, in [0, 1) (default 0)")

    p["faults"] = _parser("faults", "Table of the fault rules this notebook set (partitions, links).", "faults")

    s = p["stop"] = _parser("stop", "Stop a local node gracefully; without NODE, stop every local and remote "
                            "node and then this kernel's node.", "stop [NODE]")
    s.add_argument("node", nargs="?", help="a local or remote node's name or id (default: everything)")

    p["nodes"] = _parser("nodes", "Table of the cluster members (status, loop lag, processes, heartbeat).", "nodes")

    s = p["ps"] = _parser("ps", "Table of the processes of this kernel's node, of NODE, or of every node.",
                          "ps [NODE] [--all]")
    s.add_argument("node", nargs="?", help="node name or id (default: this kernel's node)")
    s.add_argument("--all", action="store_true", help="every node of the cluster")
    s.add_argument("--limit", type=int, default=PS_LIMIT, help="processes listed per node (default %(default)s)")
    s.add_argument("--offset", type=int, default=0, help="skip this many first (paging)")
    s.add_argument("--sort", choices=SORT_KEYS, default="pid",
                   help="pid (start order), or the largest first: queue, messages, high_water")

    p["registry"] = _parser("registry", "Registered names on every node, global names, and the behaviors "
                            "this kernel can start.", "registry")

    s = p["events"] = _parser("events", "Table of the most recent events of a node.",
                              "events [N] [--node NODE] [--kind KIND]")
    s.add_argument("count", nargs="?", type=int, default=20, metavar="N", help="how many (default 20)")
    s.add_argument("--node", help="node name or id (default: this kernel's node)")
    s.add_argument("--kind", help="only events of this kind (e.g. process_exited, node_down, error)")

    s = p["state"] = _parser("state", "The current state of a process, local or remote (like OTP's "
                             "sys:get_state), without disturbing it; messages queued before the request are "
                             "handled first (waiting at most 1 s, so a stuck process still answers).",
                             "state TARGET [--node NODE]")
    s.add_argument("target", help="a process ref like <0.12@n@127.0.0.1:5000>, a local name or a global name")
    s.add_argument("--node", help="look a local name up on this node")

    s = p["trace"] = _parser("trace", "Show live every message a process handles and its state after each "
                             "(like OTP's sys:trace), local or remote, without stopping it. The trace shows "
                             "in a live view; `--stop` ends all running traces.",
                             "trace TARGET [--for SECONDS] [--node NODE] [--max N] | trace --stop")
    s.add_argument("target", nargs="?", help="a process ref, a local name or a global name")
    s.add_argument("--for", dest="seconds", type=seconds_argument, default=10.0, help="how long (default 10 s)")
    s.add_argument("--node", help="look a local name up on this node")
    s.add_argument("--max", dest="max_events", type=int, default=1000, help="stop after N messages (default 1000)")
    s.add_argument("--stop", action="store_true", help="stop every running trace")

    s = p["crashes"] = _parser("crashes", "The crash reports of every node of the cluster (process, behavior, "
                               "node, reason, last message, traceback), newest first. A crash also shows as a "
                               "banner under the next cell and in the event log.",
                               "crashes [N] [--node NODE] [--wait K]")
    s.add_argument("count", nargs="?", type=int, default=20, metavar="N", help="how many (default 20)")
    s.add_argument("--node", help="only the crashes of this node (name or id)")
    s.add_argument("--wait", type=int, default=0, metavar="K",
                   help="first wait (at most 10 s) until K more crashes arrived (for a cell that causes them)")

    s = p["dashboard"] = _parser(
        "dashboard", "Dock the cluster topology, the supervision trees and the events in a side panel that stays "
        "on screen while you run cells (JupyterLab, with the sidecar package of noex-lab[lab]; elsewhere, or "
        "with --inline, in this cell). Running it again replaces it.", "dashboard [SUP ...] [--inline]")
    s.add_argument("supervisors", nargs="*", metavar="SUP",
                   help="supervisors to show: a variable holding a ref, a ref or a name (default: every root "
                        "supervisor of this kernel's node)")
    s.add_argument("--inline", action="store_true", help="show it in this cell, not in a side panel")

    p["watch"] = _parser("watch", "Display a live ClusterView (membership, status, loop lag, processes).", "watch")
    p["log"] = _parser("log", "Display a live EventLog of this kernel's node (background output and errors).",
                       "log")

    s = p["behavior"] = _parser(
        "behavior", "As a cell magic: run the cell, register the GenServer subclass it defines under NAME in "
        "BehaviorRegistry, and ship the cell's source to every current and future node that accepts code. "
        "Re-running the cell replaces the behavior everywhere and upgrades its running processes at their next "
        "message, keeping their state (hot upgrade: see %noex upgrade); a behavior a node loaded from its own "
        "modules (--behaviors) only with --replace, and processes running that code keep it. As a line magic: "
        "where each behavior was loaded or refused.",
        "behavior NAME [--replace]   (as the first line of a cell: %%%%noex behavior NAME)")
    s.add_argument("name", nargs="?", help="the behavior name RemoteSpawn uses")
    s.add_argument("--replace", action="store_true",
                   help="also replace a behavior of that name that a node loaded from its own modules")

    add_tool_parsers(p, _parser)  # upgrade, suspend, resume, replace-state, stats, status

    s = p["help"] = _parser("help", "This summary; the options of one subcommand; or (all) of every one.",
                            "help [SUBCOMMAND|all]")
    s.add_argument("subcommand", nargs="?")
    return p


PARSERS = _build_parsers()
ASYNC_SUBCOMMANDS = frozenset({"start", "local", "kill", "stop", "ps", "registry", "events", "crashes", "state",
                               "trace", "remote", "attach", "detach", "partition", "heal", "link",
                               "faults"}) | TOOL_SUBCOMMANDS


# Subcommands the summary lists on one shared line (each still has its own `%noex help NAME`).
SUMMARY_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("partition", "heal", "link", "faults"),
     "Network faults: cut nodes apart, shape a link, heal, list the rules"),
    (("suspend", "resume"), "Suspend a process (TARGET), or resume it: it handles its queued messages again"),
)


def _summary() -> str:
    """One line per subcommand (its arguments without the options, what it does), to fit a screen."""
    lines = ["%noex: run and inspect a noex_lab cluster from this notebook (no cell needs `await`).", "",
             "Subcommands:"]
    for name, parser in PARSERS.items():
        group = next((g for g in SUMMARY_GROUPS if name in g[0]), None)
        if group is not None:  # related subcommands share one line
            if name == group[0][0]:
                lines.append(f"  {'|'.join(group[0]):<22} {group[1]}")
            continue
        usage = (parser.usage or name).removeprefix("noex ").replace("%%", "%")
        usage = re.split(r" \[--| \(| \| ", usage)[0]
        first = re.split(r"\. | \(|; ", parser.description or "")[0].rstrip(".")
        lines.append(f"  {usage:<22} {textwrap.shorten(first, 76, placeholder='...')}")
    lines += ["", "`%noex help SUBCOMMAND` shows its options; `%noex help all` shows every option of every subcommand."]
    return "\n".join(lines)


SUMMARY = _summary()


def full_help(subcommand: str | None = None) -> str:
    """The one-screen summary; the usage and options of `subcommand`; or, for "all", everything."""
    if subcommand is None:
        return SUMMARY
    if subcommand == "all":
        return SUMMARY + "\n\n" + "\n".join(str(p.format_help()) for p in PARSERS.values())
    parser = PARSERS.get(subcommand)
    if parser is None:
        raise MagicUsageError(f"unknown subcommand {subcommand!r}; one of: {', '.join(PARSERS)}")
    return str(parser.format_help())


def parse(subcommand: str, argv: list[str]) -> argparse.Namespace:
    parser = PARSERS.get(subcommand)
    if parser is None:
        raise MagicUsageError(f"unknown subcommand {subcommand!r}; one of: {', '.join(PARSERS)} (see %noex help)")
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        usage = (parser.usage or "").replace("%%", "%")
        raise MagicUsageError(f"%noex {subcommand}: {exc} (usage: %{usage})") from None


# --------------------------------------------------------------------------------- the magics
def current_cell_number(shell: Any) -> int:
    """The `In[n]` IPython gives the running cell in its tracebacks: the number it compiled the
    cell's code under (found from the calling frames), so it is right whether IPython counts
    `execution_count` up when a cell starts (IPython 9) or ends (8), with or without history."""
    numbers = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    frame: FrameType | None = sys._getframe(1)
    for _ in range(50):
        if frame is None:
            break
        number = numbers.get(frame.f_code.co_filename)
        if isinstance(number, int):
            return number
        frame = frame.f_back
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None)
    return len(history) - 1 if history else int(shell.execution_count)


def _done() -> Any:
    """What a synchronous subcommand returns: the line may have been rewritten into an await."""
    try:
        fut = asyncio.get_running_loop().create_future()
    except RuntimeError:
        return None
    fut.set_result(None)
    return fut


class MagicCall:
    """What an asynchronous subcommand returns: an awaitable running as a task on the kernel's
    loop. Awaited (the usual case, see the module doc), it raises in the cell; never awaited (the
    line was not rewritten, e.g. `%load_ext noex_lab` in the same cell), it still runs, after the
    unawaited call before it (lines run in order), and its error is shown under the cell that made
    it: the task and this object's done-callback carry that cell's context, which ipykernel routes
    output by."""

    running: set[MagicCall] = set()  # strong references: the loop keeps only weak ones
    last: MagicCall | None = None  # the latest call: the next one waits for it if nobody awaited it

    def __init__(self, task: asyncio.Task[None], what: str, on_error: Callable[[str, BaseException], None]) -> None:
        self.task = task
        self.what = what
        self.awaited = False
        self._on_error = on_error
        MagicCall.running.add(self)
        MagicCall.last = self
        task.add_done_callback(self._finished)

    def __await__(self) -> Generator[Any, None, None]:
        self.awaited = True
        return self.task.__await__()

    def _finished(self, task: asyncio.Task[None]) -> None:
        MagicCall.running.discard(self)
        if MagicCall.last is self:
            MagicCall.last = None
        if self.awaited or task.cancelled():
            return
        exc = task.exception()  # retrieved here: nobody else will
        if exc is not None:
            self._on_error(self.what, exc)

    def __repr__(self) -> str:
        state = "done" if self.task.done() else "running"
        return f"<%noex {self.what} ({state}; await it, or put %noex lines in a cell of their own)>"


class SkippedError(LabError):
    """An unawaited `%noex` line did not run because the unawaited line before it failed."""


def _in_task(coro: Coroutine[Any, Any, Any], what: str = "command",
             on_error: Callable[[str, BaseException], None] | None = None) -> Any:
    """An awaitable for the magic to return: a `MagicCall` on the running loop (so it also runs when
    the line was not rewritten into an await), else the coroutine itself."""
    before = MagicCall.last
    if before is not None and (before.awaited or before.task.done()):
        before = None  # only a call nobody awaited can still be running when the next line starts

    async def guarded() -> None:
        if before is not None:
            await asyncio.wait([before.task])
            if before.task.cancelled() or before.task.exception() is not None:
                coro.close()
                raise SkippedError(f"%noex {what} did not run: %noex {before.what} before it failed")
        try:
            await coro  # results are shown with display(); the cell gets no Out[] value
        except NoexError as exc:  # the message says it all: keep the traceback short
            raise exc.with_traceback(None) from exc.__cause__

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return guarded()
    task = loop.create_task(guarded(), name=f"%noex {what}")
    return MagicCall(task, what, on_error or (lambda _what, _exc: None))


def show_unawaited_failure(what: str, exc: BaseException) -> None:
    """An unawaited `%noex` line failed: say so under the cell that issued it (see MagicCall)."""
    text = str(exc) if isinstance(exc, SkippedError) else f"%noex {what} failed: {type(exc).__name__}: {exc}"
    display(Message(text, "error"))


@magics_class
class NoexMagics(Magics):
    def __init__(self, shell: InteractiveShell, session: LabSession) -> None:
        super().__init__(shell)
        self.session = session

    @magic_arguments()  # type: ignore[no-untyped-call, untyped-decorator]
    @kwds(description=SUMMARY)  # type: ignore[no-untyped-call, untyped-decorator]
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "subcommand", nargs="?", default="help", choices=list(PARSERS), help="what to do")
    @argument(  # type: ignore[no-untyped-call, untyped-decorator]
        "args", nargs=argparse.REMAINDER, help="its arguments (see %%noex help SUBCOMMAND)")
    @line_cell_magic
    def noex(self, line: str, cell: str | None = None) -> Any:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise MagicUsageError(f"cannot split {line!r}: {exc}") from None
        subcommand = argv[0] if argv else "help"
        args = parse(subcommand, argv[1:])
        if cell is not None:
            if subcommand != "behavior":
                raise MagicUsageError("%%noex is a cell magic only for `behavior NAME`; use %noex for the rest")
            return self._behavior_cell(args, cell)
        if subcommand in ASYNC_SUBCOMMANDS:
            return _in_task(self._run_async(subcommand, args), line.strip(), show_unawaited_failure)
        self._run_sync(subcommand, args)
        return _done()

    # --------------------------------------------------------------- sync subcommands
    def _run_sync(self, subcommand: str, args: argparse.Namespace) -> None:
        session = self.session
        if subcommand == "help":
            print(full_help(args.subcommand))
        elif subcommand == "nodes":
            display(session.nodes_table())
        elif subcommand == "watch":
            display(session.watch())
        elif subcommand == "log":
            display(session.log())
        elif subcommand == "dashboard":
            targets = [self._variable(name) for name in args.supervisors]
            display(session.dashboard(targets, inline=args.inline))
        elif subcommand == "behavior":
            if args.name is not None:
                raise MagicUsageError("use %%noex behavior NAME as the first line of a cell that defines the behavior")
            display(session.behaviors_table())
        else:  # pragma: no cover - every subcommand is dispatched somewhere
            raise MagicUsageError(f"unknown subcommand {subcommand!r}")

    def _variable(self, text: str) -> Any:
        """A magic argument that names a variable of the notebook stands for its value."""
        user_ns = getattr(self.shell, "user_ns", None) or {}
        if text.isidentifier() and text in user_ns:
            return user_ns[text]
        return text

    def _target(self, text: str) -> str | ProcessRef:
        """A TARGET that names a notebook variable holding a `ProcessRef` stands for that ref
        (`%noex state ref3`); any other text is a name or a `<0.N@node>` ref, as before."""
        value = self._variable(text)
        return value if isinstance(value, ProcessRef) else text

    def _node(self, text: str | None) -> str | None:
        """A NODE that names a notebook variable holding a `NodeId` or a `Node` stands for its id."""
        if text is None:
            return None
        value = self._variable(text)
        if isinstance(value, Node):
            value = value.id
        return str(value) if isinstance(value, NodeId) else text

    def _nodes(self, text: str) -> str:
        """A comma-separated list of NODEs (each may name a notebook variable, see `_node`)."""
        return ",".join(self._node(part.strip()) or part for part in text.split(",") if part.strip())

    # --------------------------------------------------------------- async subcommands
    async def _run_async(self, subcommand: str, args: argparse.Namespace) -> None:
        session = self.session
        if subcommand == "start":
            options = cluster_options(args)
            await session.start(args.name, port=options["port"], host=options["host"], seeds=options["seeds"],
                                secret_env=args.secret_env, heartbeat_interval_ms=options["heartbeat_interval_ms"],
                                heartbeat_miss_threshold=options["heartbeat_miss_threshold"],
                                advertise_host=options["advertise_host"])
        elif subcommand == "local":
            await session.local(args.count, prefix=args.prefix, code_from_any=args.code_from_any)
        elif subcommand == "remote":
            await session.remote(args.host, args.count, user=args.user, python=args.python, workdir=args.workdir,
                                 prefix=args.prefix, advertise_host=args.advertise_host,
                                 ssh_options=args.ssh_option, ssh_config=args.ssh_config,
                                 code_from_any=args.code_from_any)
        elif subcommand == "attach":
            await session.attach(args.seed, secret_env=args.secret_env, member=args.member, name=args.name,
                                 host=args.host, advertise_host=args.advertise_host, timeout=args.timeout)
        elif subcommand == "detach":
            await session.detach()
        elif subcommand == "kill":
            await session.kill(args.node)
        elif subcommand == "stop":
            await session.stop(args.node)
        elif subcommand == "partition":
            display(await fault_commands.partition(session, self._nodes(args.side_a), self._nodes(args.side_b),
                                                   mode=args.mode, one_way=args.one_way))
        elif subcommand == "heal":
            display(await fault_commands.heal(session, [self._node(n) or n for n in args.nodes]))
        elif subcommand == "link":
            display(await fault_commands.link(session, self._node(args.node) or args.node, self._node(args.other),
                                              latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, loss=args.loss))
        elif subcommand == "faults":
            display(await fault_commands.rules_table(session))
        elif subcommand == "ps":
            display(*await session.ps(self._node(args.node), all_nodes=args.all, limit=args.limit,
                                      offset=args.offset, sort=args.sort))
        elif subcommand == "registry":
            display(*await session.registry())
        elif subcommand == "events":
            display(await session.events(args.count, spec=self._node(args.node), kind=args.kind))
        elif subcommand == "crashes":
            display(await session.crashes(args.count, spec=self._node(args.node), wait=args.wait))
        elif subcommand == "state":
            display(await session.state(self._target(args.target), on=self._node(args.node)))
        elif subcommand == "trace":
            if args.stop:
                stopped = session.stop_traces()
                display(Message(f"stopped {stopped} running trace(s)", "ok"))
                return
            if args.target is None:
                raise MagicUsageError("%noex trace needs a TARGET (or --stop)")
            display(await session.trace(self._target(args.target), seconds=args.seconds, on=self._node(args.node),
                                        max_events=args.max_events))
        elif subcommand in TOOL_SUBCOMMANDS:
            assert self.shell is not None
            display(*await run_tool(session, subcommand, args, self.shell.user_ns))

    # --------------------------------------------------------------- %%noex behavior
    def _behavior_cell(self, args: argparse.Namespace, cell: str) -> Any:
        name = args.name
        if not name:
            raise MagicUsageError("%%noex behavior needs a NAME: the name RemoteSpawn.spawn will use")
        shell = self.shell
        assert shell is not None
        transformed: str = shell.transform_cell(cell)  # type: ignore[no-untyped-call]
        number = current_cell_number(shell)
        # one blank line for the `%%noex behavior` line: tracebacks (here and on every node the
        # source is shipped to) give the line numbers the notebook's editor shows
        filename = shell.compile.cache("\n" + transformed, number, raw_code="\n" + cell)
        code = shell.compile("\n" + transformed, filename, "exec")
        exec(code, shell.user_ns)
        cls = pick_behavior(name, transformed, shell.user_ns)
        BehaviorRegistry.register(name, cls)
        return _in_task(self.session.ship_behavior(name, "\n" + cell, cls, replace=args.replace, cell=number),
                        f"behavior {name}", self.session.background_failure)


# --------------------------------------------------------------------------------- extension entry points
_sessions: weakref.WeakKeyDictionary[Any, LabSession] = weakref.WeakKeyDictionary()


def session_of(ip: InteractiveShell) -> LabSession:
    """The `LabSession` of a shell that loaded the extension."""
    session = _sessions.get(ip)
    if session is None:
        raise LabError("the noex_lab extension is not loaded: run %load_ext noex_lab")
    return session


def load_ipython_extension(ip: InteractiveShell) -> None:
    """`%load_ext noex_lab`: register %noex / %%noex, the await transformer, reprs and the background reporter."""
    if ip in _sessions:
        return
    session = LabSession(ip)
    _sessions[ip] = session
    session.load()
    ip.register_magics(NoexMagics(ip, session))
    if await_noex_magics not in ip.input_transformers_post:
        ip.input_transformers_post.append(await_noex_magics)
    register_reprs(ip)
    atexit.register(session.launcher.close_all)


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """`%unload_ext noex_lab`: stop views and traces, close local nodes, remove the hooks."""
    session = _sessions.pop(ip, None)
    if session is None:
        return
    session.unload()
    atexit.unregister(session.launcher.close_all)
    if await_noex_magics in ip.input_transformers_post:
        ip.input_transformers_post.remove(await_noex_magics)
    unregister_reprs(ip)
    magics: dict[str, dict[str, Callable[..., Any]]] = ip.magics_manager.magics
    magics["line"].pop("noex", None)
    magics["cell"].pop("noex", None)

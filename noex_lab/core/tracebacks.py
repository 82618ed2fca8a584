"""Tracebacks that point at the user's code: noex_lab's own frames (and the asyncio, anyio and
stdlib frames under them) folded away, file names of notebook cells shown as `Cell In[n]`.

A crash travels as traceback *text* (`ErrorReason.traceback`, `CallError.remote_traceback`),
so folding works on text and on traceback objects alike. Folding is on by default;
`show_library_frames(True)` (or the environment variable `NOEX_LAB_FULL_TRACEBACKS=1`) shows
every frame. The Jupyter layer registers `labelers` that turn a cell's file name into
`Cell In[n]` and a behavior shipped from a `%%noex behavior` cell into the cell it came from.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Callable
from types import TracebackType

_FRAME = re.compile(r'^(?P<indent>\s*)File "(?P<file>.+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')

# The runtime's machinery: noex_lab itself, the event loops under it, the stdlib, IPython's.
_LIBRARY = re.compile(
    r"[/\\]noex_lab[/\\](?:core|distribution|lab|terminal)[/\\]"
    r"|[/\\]noex_lab[/\\][A-Za-z_]+\.py$"
    r"|[/\\](?:site|dist)-packages[/\\](?:anyio|sniffio|trio|IPython|ipykernel|tornado|zmq|jupyter_client)[/\\]"
    r"|[/\\]lib[/\\]python3(?:\.\d+)?[/\\](?!site-packages|dist-packages)"
    r"|^<frozen "
)

labelers: list[Callable[[str], str | None]] = []  # file name -> a label such as "Cell In[4]" (or None)

_full = os.environ.get("NOEX_LAB_FULL_TRACEBACKS", "").lower() in ("1", "true", "yes", "on")


def show_library_frames(on: bool = True) -> None:
    """Show (True) or fold (False, the default) noex_lab's own frames in crash tracebacks."""
    global _full
    _full = bool(on)


def library_frames_shown() -> bool:
    return _full


def is_library(filename: str) -> bool:
    """Whether a frame of `filename` belongs to the runtime rather than to the user's code."""
    return bool(_LIBRARY.search(filename))


def label(filename: str) -> str:
    """`Cell In[n]` (or another registered label) for a file name, else `File "name"`."""
    for labeler in labelers:
        try:
            text = labeler(filename)
        except Exception:
            text = None
        if text:
            return text
    return f'File "{filename}"'


def _fold_note(count: int) -> str:
    s = "s" if count != 1 else ""
    return f"[{count} noex_lab frame{s} folded]"


def fold(text: str, *, full: bool | None = None) -> str:
    """Traceback text with runs of library frames replaced by one `[N noex_lab frames folded]`
    line, and frame file names relabeled (`Cell In[4], line 7, in handle_call`)."""
    full = _full if full is None else full
    out: list[str] = []
    folded = 0
    indent = "  "
    skipping = False
    for line in text.splitlines():
        m = _FRAME.match(line)
        if m is not None:
            if not full and is_library(m["file"]):
                folded += 1
                indent = m["indent"]
                skipping = True
                continue
            if folded:
                out.append(f"{indent}{_fold_note(folded)}")
                folded = 0
            skipping = False
            func = f", in {m['func']}" if m["func"] else ""
            out.append(f"{m['indent']}{label(m['file'])}, line {m['line']}{func}")
            continue
        if skipping and line.startswith(indent + " "):
            continue  # the source and caret lines of a folded frame
        if folded:
            out.append(f"{indent}{_fold_note(folded)}")
            folded = 0
        skipping = False
        out.append(line)
    if folded:
        out.append(f"{indent}{_fold_note(folded)}")
    return "\n".join(out)


def user_frames(tb: TracebackType | None, *, full: bool | None = None) -> list[str]:
    """The frames of a local traceback object as lines, library frames folded (see `fold`)."""
    if tb is None:
        return []
    text = "".join(traceback.format_list(traceback.extract_tb(tb)))
    lines = fold(text, full=full).splitlines()
    if lines and lines[0].lstrip().startswith("[") and len(lines) > 1:
        lines = lines[1:]  # the machinery that ran the caller's code (IPython, the loop), not the call
    return lines


def folded_count(text: str) -> int:
    """How many library frames `fold` would hide in `text`."""
    return sum(1 for line in text.splitlines() if (m := _FRAME.match(line)) and is_library(m["file"]))

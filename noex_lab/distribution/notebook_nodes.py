"""Where `noex-lab top` finds a notebook's cluster without being told.

A kernel whose node uses the per-user secret (`%noex start NAME` without `--secret-env`) writes
its node id to `$XDG_CONFIG_HOME/noex-lab/nodes/<pid>.json` (readable by its user only, next to
the secret file); `noex-lab top` without SEED_ID attaches to the newest one whose kernel is still
alive, with that same secret. Files of kernels that are gone are removed by the next reader.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .user_secret import secret_path


def nodes_dir() -> Path:
    return secret_path().parent / "nodes"


def advertise(node_id: object, *, pid: int | None = None) -> Path:
    """Record that process `pid` (this one by default) runs node `node_id` with the per-user secret."""
    pid = os.getpid() if pid is None else pid
    folder = nodes_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    tmp = folder / f".{pid}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"node": str(node_id), "pid": pid, "started": time.time()}, f)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def withdraw(path: Path | None) -> None:
    """Forget an advertisement (the node stopped); best effort: a stale file is cleaned up by readers."""
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not ours to attach to, and not ours to remove
        return True
    return True


def advertised() -> list[dict[str, Any]]:
    """The nodes of live kernels, newest first (files of dead kernels are removed)."""
    found = []
    try:
        paths = list(nodes_dir().glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            entry = json.loads(path.read_text())
            pid, node = int(entry["pid"]), str(entry["node"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            withdraw(path)
            continue
        found.append({"node": node, "pid": pid, "started": float(entry.get("started", 0.0))})
    return sorted(found, key=lambda e: e["started"], reverse=True)

"""A real ipykernel driven through jupyter_client, for the Jupyter-layer tests.

`Kernel.execute(code)` runs a cell and returns its outputs; every IOPub message (also those
that arrive while the kernel is idle: widget updates from background tasks) is kept in
`Kernel.messages`, in arrival order, so tests can count them.
"""

from __future__ import annotations

import ast
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CellResult:
    code: str
    msg_id: str
    status: str = "ok"
    outputs: list[dict[str, Any]] = field(default_factory=list)  # the IOPub messages of this cell
    error: dict[str, Any] | None = None
    reply: dict[str, Any] = field(default_factory=dict)  # the execute_reply content (payloads: %magic? pages)

    @property
    def text(self) -> str:
        """stdout/stderr text plus the text/plain of displays and results."""
        parts = []
        for msg in self.outputs:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                parts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                parts.append(str(content["data"].get("text/plain", "")) + "\n")
            elif msg["msg_type"] == "error":
                parts.append(f"{content['ename']}: {content['evalue']}\n")
        return "".join(parts)

    @property
    def html(self) -> str:
        return "".join(
            str(m["content"]["data"].get("text/html", "")) for m in self.outputs
            if m["msg_type"] in ("display_data", "execute_result")
        )

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    def widget_ids(self) -> list[str]:
        ids = []
        for m in self.outputs:
            if m["msg_type"] in ("display_data", "execute_result"):
                view = m["content"]["data"].get("application/vnd.jupyter.widget-view+json")
                if view:
                    ids.append(view["model_id"])
        return ids

    @property
    def ename(self) -> str | None:
        return None if self.error is None else str(self.error.get("ename"))

    def expect_ok(self) -> CellResult:
        if self.status != "ok":
            assert self.error is not None
            tb = "\n".join(self.error.get("traceback", []))
            what = f"{self.error['ename']}: {self.error['evalue']}"
            raise AssertionError(f"cell failed: {what}\n{tb}\n--- code:\n{self.code}")
        return self


class Kernel:
    """One ipykernel process (the venv's python), with its client."""

    def __init__(self, cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env.update(extra_env or {})
        self.km.start_kernel(cwd=str(cwd or REPO), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.messages: list[dict[str, Any]] = []

    @property
    def pid(self) -> int:
        provisioner = self.km.provisioner
        assert provisioner is not None
        pid = getattr(provisioner, "pid", None) or provisioner.process.pid  # type: ignore[attr-defined]
        return int(pid)

    # --------------------------------------------------------------- messages
    def _next(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg: dict[str, Any] = self.kc.get_iopub_msg(timeout=max(0.01, timeout))
        except queue.Empty:
            return None
        self.messages.append(msg)
        return msg

    def execute(self, code: str, timeout: float = 60.0, *, allow_error: bool = False) -> CellResult:
        msg_id = self.kc.execute(code)
        result = CellResult(code, msg_id)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"cell did not finish within {timeout} s:\n{code}\noutputs: {result.text}")
            msg = self._next(remaining)
            if msg is None or msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif kind not in ("execute_input",):
                result.outputs.append(msg)
                if kind == "error":
                    result.status = "error"
                    result.error = msg["content"]
        while True:  # the reply to this request (skip stale replies, e.g. of an interrupted cell)
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result.reply = reply["content"]
        if reply["content"]["status"] != "ok" and result.error is None:
            result.status = "error"
            result.error = reply["content"]
        if not allow_error:
            result.expect_ok()
        return result

    def ok(self, code: str, timeout: float = 60.0) -> CellResult:
        return self.execute(code, timeout)

    def eval(self, expr: str, timeout: float = 30.0) -> Any:
        """The value of a Python literal expression evaluated in the kernel."""
        result = self.execute(f"print('@@' + repr({expr}))", timeout)
        for line in result.stdout.splitlines():
            if line.startswith("@@"):
                return ast.literal_eval(line[2:])
        raise AssertionError(f"no value for {expr!r}: {result.text}")

    def pump_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Collect IOPub messages (the kernel may be idle) until `predicate()`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self._next(min(remaining, 0.2))

    def pump_for(self, seconds: float) -> None:
        """Collect IOPub messages for `seconds` (to measure a rate, not to wait for something)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._next(min(remaining, 0.2))

    # --------------------------------------------------------------- widget bookkeeping
    def comm_opens(self, since: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.messages[since:] if m["msg_type"] == "comm_open"]

    def updates(self, model_id: str, since: int = 0) -> list[dict[str, Any]]:
        return [
            m for m in self.messages[since:]
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model_id
            and m["content"]["data"].get("method") == "update"
        ]

    def last_value(self, model_id: str) -> str:
        value = ""
        for m in self.messages:
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == model_id:
                state = m["content"]["data"].get("state", {})
                if "value" in state:
                    value = state["value"]
            elif m["msg_type"] == "comm_open" and m["content"]["comm_id"] == model_id:
                value = m["content"]["data"]["state"].get("value", value)
        return value

    # --------------------------------------------------------------- lifecycle
    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            try:
                self.km.shutdown_kernel(now=True)
            except Exception:
                if self.km.has_kernel:
                    with_pid = getattr(self.km.provisioner, "process", None)
                    if with_pid is not None:
                        os.kill(with_pid.pid, signal.SIGKILL)


def python() -> str:
    return sys.executable

"""OpenTelemetry: remote calls carry the caller's trace context (`noex_lab.otel.instrument()`).

`instrument()` replaces, process-wide, `RemoteRouter.call` (a CLIENT span per remote call; the
W3C trace-context headers of that span travel in the CALL frame) and `RemoteRouter.traced_reply`
(a SERVER span `handle_call <Behavior>` on the target node, a child of the caller's span, from
the call's arrival until its reply). Nothing changes until it is called: the CALL frame and its
path stay as they are. Remote calls made while handling a traced call continue its trace.

It needs the `opentelemetry-api` package (`pip install 'noex-lab[otel]'`); spans go wherever the
application's tracer provider sends them (the API alone records nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from ..core.errors import MissingExtraError
from ..core.node import current_process
from .routing import RemoteReply, RemoteRouter

if TYPE_CHECKING:
    from types import ModuleType

    from ..core.process import Process
    from ..core.refs import ProcessRef
    from .connection import Connection

# OpenTelemetry's `trace.Span`, `trace.Tracer` and `context.Context`, named without importing the
# package: it is the [otel] extra's, imported by `instrument()` alone
Span: TypeAlias = Any
Tracer: TypeAlias = Any
Context: TypeAlias = Any

MAX_CONTEXT_FIELDS = 8   # a peer's trace context: at most this many headers ...
MAX_CONTEXT_CHARS = 512  # ... of at most this many characters each

_plain_call = RemoteRouter.call
_plain_traced_reply = RemoteRouter.traced_reply
_tracer: Tracer | None = None
# `opentelemetry.propagate` and `opentelemetry.trace`, imported by `instrument()` only: the [otel]
# extra is needed once tracing is asked for, never by a node that does not trace
propagate: ModuleType
trace: ModuleType


class TracedReply(RemoteReply):
    """The reply of a traced call: ends its SERVER span when the answer (or error) is sent."""

    __slots__ = ("span",)

    def __init__(self, conn: Connection, req: int, span: Span) -> None:
        super().__init__(conn, req)
        self.span = span

    def set_result(self, value: Any) -> None:
        try:
            super().set_result(value)
        finally:
            self.span.end()

    def set_exception(self, exc: BaseException) -> None:
        try:
            self.span.record_exception(exc)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            super().set_exception(exc)
        finally:
            self.span.end()


def call_context() -> Context | None:
    """The trace context of the call the current process is handling, if it came with one:
    pass it as `context=` to start your own spans inside `handle_call` under the call's span."""
    proc = current_process()
    reply = proc.reply_to if proc is not None else None
    if isinstance(reply, TracedReply):
        context: Context = trace.set_span_in_context(reply.span)
        return context
    return None


def _parent() -> Context | None:
    """The caller's span: the active one, else the traced call this process is handling."""
    if trace.get_current_span().get_span_context().is_valid:
        return None  # (None: the current context)
    return call_context()


async def _traced_call(self: RemoteRouter, to: ProcessRef, msg: Any, timeout: float,
                       sender: ProcessRef | None) -> Any:
    assert _tracer is not None
    attributes = {"rpc.system": "noex_lab", "noex.target": str(to), "noex.node": str(self.node.id),
                  "noex.peer": str(to.node)}
    with _tracer.start_as_current_span("noex_lab.call", context=_parent(), kind=trace.SpanKind.CLIENT,
                                       attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if not carrier:  # a non-recording tracer: nothing to carry
            return await _plain_call(self, to, msg, timeout, sender)
        return await self.call_with_context(to, msg, timeout, sender, carrier)


def _traced_reply(self: RemoteRouter, conn: Connection, req: int, proc: Process, context: Any) -> RemoteReply:
    assert _tracer is not None
    carrier: dict[str, str] = {}
    if isinstance(context, dict):  # a peer's value: only short text headers are read
        for key, value in list(context.items())[:MAX_CONTEXT_FIELDS]:
            if isinstance(key, str) and isinstance(value, str) and len(value) <= MAX_CONTEXT_CHARS:
                carrier[key] = value
    span = _tracer.start_span(
        f"handle_call {proc.behavior.__name__}", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "noex_lab", "noex.process": str(proc.ref), "noex.node": str(self.node.id),
                    "noex.peer": str(conn.peer)},
    )
    return TracedReply(conn, req, span)


def instrument(tracer_provider: Any = None) -> None:
    """Trace remote calls in this OS process (every node in it), with `tracer_provider` or the
    global one. Calling it again replaces the provider; `uninstrument()` turns it off."""
    global _tracer, propagate, trace
    try:
        import opentelemetry.propagate
        import opentelemetry.trace
    except ImportError:
        raise MissingExtraError("OpenTelemetry tracing", "opentelemetry-api", "otel") from None
    from ..version import __version__

    propagate, trace = opentelemetry.propagate, opentelemetry.trace

    _tracer = trace.get_tracer("noex_lab", __version__, tracer_provider=tracer_provider)
    RemoteRouter.call = _traced_call  # type: ignore[method-assign]
    RemoteRouter.traced_reply = _traced_reply  # type: ignore[method-assign]


def uninstrument() -> None:
    """Back to plain remote calls (contexts that still arrive are ignored)."""
    global _tracer
    RemoteRouter.call = _plain_call  # type: ignore[method-assign]
    RemoteRouter.traced_reply = _plain_traced_reply  # type: ignore[method-assign]
    _tracer = None


def instrumented() -> bool:
    return _tracer is not None

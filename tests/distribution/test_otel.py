"""OpenTelemetry (noex_lab.otel): a remote call's span on the caller's node and the handle_call span
on the target's node join one trace (SDK with the in-memory exporter); off, frames are unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from noex_lab import CallError, GenServer
from noex_lab import otel as noex_otel
from noex_lab.distribution import protocol as p
from tests.helpers.cluster import start_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cleanup")]


class Relay(GenServer):
    """("relay", ref, msg) calls `ref` while handling this call; "crash" raises."""

    async def handle_call(self, msg: Any, state: Any) -> Any:
        if msg == "crash":
            raise RuntimeError("crash on request")
        if isinstance(msg, tuple) and msg[0] == "relay":
            return await GenServer.call(msg[1], msg[2]), state
        return ("echo", msg), state


class Recorded:
    """The SDK side of a test: a tracer provider whose finished spans stay in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def spans() -> Iterator[Recorded]:
    recorded = Recorded()
    noex_otel.instrument(tracer_provider=recorded.provider)
    try:
        yield recorded
    finally:
        noex_otel.uninstrument()
        recorded.provider.shutdown()


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in spans]
    return found[0]


def _on(spans: list[ReadableSpan], name: str, node: Any) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name and (s.attributes or {}).get("noex.node") == str(node)]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_remote_call_and_its_handle_call_join_one_trace(spans: Recorded) -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        relay_b = await GenServer.start(Relay)
    with a.as_default():
        relay_a = await GenServer.start(Relay)
        with spans.provider.get_tracer("test").start_as_current_span("request") as root:
            assert await GenServer.call(relay_b, "hi") == ("echo", "hi")
            # b's Relay calls back into a's Relay while handling this call: the trace goes on
            assert await GenServer.call(relay_b, ("relay", relay_a, "back")) == ("echo", "back")
    finished = spans.finished()
    assert {s.context.trace_id for s in finished} == {root.get_span_context().trace_id}
    clients = _on(finished, "noex_lab.call", a.id)
    assert len(clients) == 2 and all(s.kind == SpanKind.CLIENT for s in clients)
    assert all(_parent_id(s) == root.get_span_context().span_id for s in clients)
    assert {(s.attributes or {}).get("noex.target") for s in clients} == {str(relay_b)}
    servers = _on(finished, "handle_call Relay", b.id)
    assert len(servers) == 2 and all(s.kind == SpanKind.SERVER for s in servers)
    assert sorted(map(_parent_id, servers)) == sorted(s.context.span_id for s in clients)  # type: ignore[type-var]
    # the nested call: a CLIENT span on b under b's SERVER span, and a SERVER span on a under it
    [nested_client] = _on(finished, "noex_lab.call", b.id)
    assert _parent_id(nested_client) in {s.context.span_id for s in servers}
    [nested_server] = _on(finished, "handle_call Relay", a.id)
    assert _parent_id(nested_server) == nested_client.context.span_id
    assert all(s.status.status_code != StatusCode.ERROR for s in finished)


async def test_a_crash_marks_both_spans_as_errors(spans: Recorded) -> None:
    a, b = await start_cluster(2)
    with b.as_default():
        relay_b = await GenServer.start(Relay)
    with a.as_default(), pytest.raises(CallError):
        await GenServer.call(relay_b, "crash")
    finished = spans.finished()
    client = _one(finished, "noex_lab.call")
    server = _one(finished, "handle_call Relay")
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert client.status.status_code == StatusCode.ERROR and server.status.status_code == StatusCode.ERROR
    assert "crash on request" in (server.status.description or "")


async def test_uninstrumented_calls_send_plain_frames_and_ignore_contexts() -> None:
    assert not noex_otel.instrumented()
    a, b = await start_cluster(2)
    with b.as_default():
        relay_b = await GenServer.start(Relay)
    sent: list[list[Any]] = []
    conn = a.router.conns[b.id]  # type: ignore[attr-defined]
    plain_send = conn.send
    conn.send = lambda message: (sent.append(message), plain_send(message))[1]
    with a.as_default():
        assert await GenServer.call(relay_b, 1) == ("echo", 1)
        # a context from a traced peer is ignored by a node that is not instrumented
        context = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        assert await a.router.call_with_context(relay_b, 2, 5.0, None, context) == ("echo", 2)  # type: ignore[attr-defined]
    calls = [m for m in sent if m[0] == p.CALL]
    assert len(calls[0]) == 6 and calls[0][5] == 1  # [CALL, req, pid, creation, sender, msg]
    assert len(calls[1]) == 7 and calls[1][5:] == [context, 2]  # [..., sender, context, msg]

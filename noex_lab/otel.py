"""OpenTelemetry for remote calls: `instrument()` (needs `pip install 'noex-lab[otel]'`).

See `noex_lab.distribution.tracing` for the spans it makes and how the context travels."""

from .distribution.tracing import TracedReply, call_context, instrument, instrumented, uninstrument

__all__ = ["TracedReply", "call_context", "instrument", "instrumented", "uninstrument"]

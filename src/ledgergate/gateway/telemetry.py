"""OpenTelemetry traces over OTLP/HTTP: one span per MCP request, when configured.

Off by default, and then free: nothing here imports the OpenTelemetry SDK at module level, the
gateway never calls `Tracing.start`, and `Pipeline.handle` hands out its generator unwrapped.
On, each request's generator is wrapped by `Tracing.traced`, which opens a SERVER span when the
pipeline starts the call and ends it when the answer is out (or the call failed).

A span says what was decided, never what was asked: server, MCP method, tool (or other target),
decision, rule, request id and outcome. Arguments, results, session ids (they are bearer
secrets) and tokens never become attributes.

The SDK's own tracer provider is used, not the global one, so no library the gateway loads
starts exporting through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from ledgergate.config import TelemetrySettings
from ledgergate.errors import GatewayError
from ledgergate.gateway.call import Call
from ledgergate.identity.redact import redact_url
from ledgergate.upstream.base import Message

log = logging.getLogger("ledgergate.telemetry")

INSTALL_HINT = "pip install 'ledgergate[otel]'"


class TelemetryUnavailable(RuntimeError):
    """Telemetry is configured but cannot run (the optional packages are missing)."""


class Tracing:
    """A tracer provider exporting to one OTLP/HTTP collector, and the span around each request."""

    def __init__(self, provider: Any, tracer: Any, span_kind: Any, status: Any, status_code: Any) -> None:
        self._provider = provider
        self._tracer = tracer
        self._server_kind = span_kind.SERVER
        self._status = status
        self._error = status_code.ERROR

    @classmethod
    def start(cls, settings: TelemetrySettings) -> Tracing:
        """Build the exporter and provider (spans are batched and sent from the SDK's own thread)."""
        assert settings.otlp_endpoint is not None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError as exc:
            raise TelemetryUnavailable(
                f"telemetry.otlp_endpoint is set but the OpenTelemetry packages are missing ({exc.name}); "
                f"install them with {INSTALL_HINT}, or remove telemetry.otlp_endpoint") from None
        from ledgergate import __version__

        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name, "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces",
                                    headers=dict(settings.headers), timeout=settings.timeout)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        log.info("tracing: spans go to %s as service %s", redact_url(settings.otlp_endpoint.rstrip("/") + "/v1/traces"),
                 settings.service_name)  # the endpoint may carry the collector's credentials
        return cls(provider, provider.get_tracer("ledgergate"), SpanKind, Status, StatusCode)

    async def close(self) -> None:
        """Send what is still queued, then stop the exporter."""
        await asyncio.to_thread(self._provider.shutdown)

    async def traced(self, call: Call, messages: AsyncGenerator[Message, None],
                     shown: Callable[[str], str]) -> AsyncGenerator[Message, None]:
        """`messages`, inside one span for `call`. Every text a caller or an upstream chose (the target: a
        resource URI's query, a tool or prompt name; an error's words) is `shown`, masked as the ledger masks
        it: a collector is one more place the data goes, usually kept longer and read more widely."""
        target = shown(call.target) if call.target else None
        span = self._tracer.start_span(call.method + (f" {target}" if target else ""),
                                       kind=self._server_kind, attributes=_identity(call, target))
        last: Message | None = None
        outcome: str | None = None
        try:
            async with aclosing(messages) as inner:
                async for message in inner:
                    last = message
                    yield message
        except GatewayError as exc:
            outcome = "refused"
            span.set_attribute("ledgergate.error_code", exc.rpc_code)
            span.set_status(self._status(self._error, shown(exc.message)[:300]))
            raise
        except (GeneratorExit, asyncio.CancelledError):
            raise  # the client has its answer (the transport stops reading there) or went away
        except Exception as exc:
            outcome = "failed"
            span.set_status(self._status(self._error, type(exc).__name__))
            raise
        finally:
            if outcome is None:
                if last is None or "method" in last:
                    outcome = "abandoned"  # ended before its answer
                elif "error" in last:
                    outcome = "error"
                    span.set_status(self._status(self._error, "the answer is a JSON-RPC error"))
                else:
                    outcome = "ok"
            span.set_attribute("ledgergate.outcome", outcome)
            for key, value in _decision(call).items():
                span.set_attribute(key, value)
            span.end()


def _identity(call: Call, target: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"ledgergate.server": call.server, "mcp.method.name": call.method,
                                  "ledgergate.request_id": call.request_id, "ledgergate.era": call.era}
    if target is not None:
        attributes["gen_ai.tool.name" if call.method == "tools/call" else "ledgergate.target"] = target
    return attributes


def _decision(call: Call) -> dict[str, Any]:
    decision = call.decision
    if decision is None:
        return {}
    out: dict[str, Any] = {"ledgergate.decision": decision.effect}
    if decision.rule is not None:
        out["ledgergate.rule"] = decision.rule
    if call.approval_id is not None:
        out["ledgergate.approval"] = call.approval_id
    return out

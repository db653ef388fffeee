"""The OpenAPI 3.1 description the ingest server serves at ``/openapi.json``.

Built from the event models (``EVENT_ADAPTER``), so the schemas can never drift from the parser.
"""

from __future__ import annotations

from typing import Any

from streams.core.events import EVENT_ADAPTER
from streams.ingest_server.limits import Limits

CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 structured mode; `type` is a burnwatch event type, optionally "
                   "prefixed (`dev.burnwatch.llm.request`); `id` and `time` fill `event_id` and `time`.",
    "required": ["specversion", "id", "type", "source", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string"},
        "type": {"type": "string"},
        "source": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "data": {"type": "object"},
    },
}

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "rejected", "rejections"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0, "description": "Events acknowledged by Kafka."},
        "rejected": {"type": "integer", "minimum": 0, "description": "Rejections sent to usage.dlq."},
        "rejections": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "reason", "detail"],
                "properties": {
                    "index": {"type": ["integer", "null"],
                              "description": "Position in the array, or null for the whole body."},
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}},
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}, **extra}


def build_openapi(limits: Limits | None = None) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the ingest server's routes."""
    limits = limits or Limits()
    event_schema = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(event_schema.pop("$defs"))
    schemas["UsageEvent"] = event_schema
    schemas["CloudEvent"] = CLOUDEVENT_SCHEMA
    schemas["IngestResult"] = RESULT_SCHEMA
    schemas["Error"] = ERROR_SCHEMA
    event = {"$ref": "#/components/schemas/UsageEvent"}
    cloud = {"$ref": "#/components/schemas/CloudEvent"}
    result = {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}
    retry_after = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                   "schema": {"type": "integer"}}}
    post = {
        "operationId": "postEvents",
        "summary": "Validate usage events and produce them to Kafka",
        "description": (
            "One event, a JSON array of events, one CloudEvent (structured mode) or a CloudEvents batch. "
            f"At most {limits.max_body_bytes} bytes and {limits.max_events} events per request; each "
            f"source may send {limits.rate_per_s:g} events/s on average (bursts up to {limits.burst:g}). "
            "The answer comes only after Kafka acknowledged every accepted event and every dead letter."
        ),
        "security": [{"bearerAuth": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": [event, {"type": "array", "items": event}]}},
                "application/cloudevents+json": {"schema": cloud},
                "application/cloudevents-batch+json": {"schema": {"type": "array", "items": cloud}},
            },
        },
        "responses": {
            "202": {"description": "At least one event accepted; any rejections went to usage.dlq.",
                    "content": result},
            "400": {"description": "No event accepted; the rejections went to usage.dlq.", "content": result},
            "401": _error("Missing or invalid bearer token; nothing was read or published."),
            "413": _error("The body is larger than the size limit."),
            "415": _error("Unsupported Content-Type."),
            "429": _error("The source's rate limit is exceeded; nothing was published.", headers=retry_after),
            "503": _error("Kafka is unreachable or did not acknowledge; retry the request (event ids make "
                          "a retry safe).", headers=retry_after),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "burnwatch ingest server",
            "version": "1",
            "description": "Usage events over HTTP for gateways that do not speak Kafka.",
        },
        "paths": {
            "/v1/events": {"post": post},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "Ready when Kafka and every burnwatch topic are known",
                "responses": {"200": {"description": "Ready."}, "503": {"description": "Not ready."}},
            }},
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 JSON.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "One token per source."}},
        },
    }

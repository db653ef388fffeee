"""The ingest server's aiohttp app: ``POST /v1/events``, ``/healthz``, ``/metrics``, ``/openapi.json``.

A request goes: bearer token (401 touches nothing and reads no body) → Content-Type (415) → size
(413) → parse with ``streams.core.events.parse_message`` in a worker thread → per-source rate in
events (429, nothing published) → publish accepted events and dead letters and await Kafka's
acknowledgements → 202 (or 400 when nothing was accepted) with accepted/rejected counts.

Dead letters of HTTP input carry ``source_topic`` ``"http"``, ``source_partition`` and
``source_offset`` ``-1`` (an HTTP body has neither) and the sending source as ``message_key``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.core.dead_letter import dead_letter_record, encode_dead_letter
from streams.core.events import ParsedMessage, parse_message
from streams.ingest_server.auth import TokenStore
from streams.ingest_server.limits import Limits, RateLimiter
from streams.ingest_server.metrics import UNAUTHENTICATED, IngestMetrics
from streams.ingest_server.openapi import build_openapi
from streams.ingest_server.publish import Publisher, PublishError

log = logging.getLogger(__name__)

DLQ_SOURCE_TOPIC = "http"
DLQ_NO_POSITION = -1
REQUEST_TYPES = frozenset({
    "application/json", "application/cloudevents+json", "application/cloudevents-batch+json",
})
PUBLISH_RETRY_AFTER_S = 5


@dataclass(slots=True)
class Ingest:
    """Everything a request handler needs, kept on the app under ``INGEST``."""

    tokens: TokenStore
    limits: Limits
    publisher: Publisher
    metrics: IngestMetrics
    limiter: RateLimiter
    openapi: dict[str, Any]


INGEST = web.AppKey("ingest", Ingest)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _dead_letters(parsed: ParsedMessage, source: str) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC)
    key = source.encode()
    out = []
    for rejection in parsed.rejections:
        record = dead_letter_record(rejection, topic=DLQ_SOURCE_TOPIC, partition=DLQ_NO_POSITION,
                                    offset=DLQ_NO_POSITION, rejected_at=now, message_key=key)
        out.append((key, encode_dead_letter(record)))
    return out


async def post_events(request: web.Request) -> web.Response:
    """Authenticate, limit, validate and publish one request's events."""
    ingest = request.app[INGEST]
    started = time.perf_counter()
    source = ingest.tokens.authenticate(request.headers.get("Authorization"))
    if source is None:
        ingest.metrics.requests.labels(UNAUTHENTICATED, "401").inc()
        log.warning("rejected a request from %s: missing or invalid bearer token", request.remote)
        return _error(401, "missing or invalid bearer token", **{"WWW-Authenticate": "Bearer"})
    response = await _authenticated(request, ingest, source)
    ingest.metrics.requests.labels(source, str(response.status)).inc()
    ingest.metrics.request_seconds.observe(time.perf_counter() - started)
    return response


async def _authenticated(request: web.Request, ingest: Ingest, source: str) -> web.Response:
    limits = ingest.limits
    if request.content_type not in REQUEST_TYPES:
        return _error(415, f"Content-Type must be one of {', '.join(sorted(REQUEST_TYPES))}")
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        return _error(413, f"body is {request.content_length} bytes, limit {limits.max_body_bytes}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body exceeds the limit of {limits.max_body_bytes} bytes")
    loop = asyncio.get_running_loop()
    # Validating thousands of events takes milliseconds: off the loop, so health checks stay prompt.
    parsed = await loop.run_in_executor(
        None, lambda: parse_message(body, max_bytes=limits.max_body_bytes, max_events=limits.max_events)
    )
    wait = ingest.limiter.retry_after(source, len(parsed.events) + len(parsed.rejections))
    if wait:
        ingest.metrics.events_rate_limited.labels(source).inc(len(parsed.events) + len(parsed.rejections))
        return _error(429, f"rate limit of {limits.rate_per_s:g} events/s for source {source!r} exceeded",
                      **{"Retry-After": str(wait)})
    try:
        await ingest.publisher.publish(parsed.events, _dead_letters(parsed, source))
    except PublishError as error:
        log.warning("could not publish a request of source %s: %s", source, error)
        retry = str(PUBLISH_RETRY_AFTER_S)
        return _error(503, f"Kafka did not acknowledge: {error}", **{"Retry-After": retry})
    ingest.metrics.events_accepted.labels(source).inc(len(parsed.events))
    for rejection in parsed.rejections:
        ingest.metrics.events_rejected.labels(source, rejection.reason).inc()
    result = {
        "accepted": len(parsed.events),
        "rejected": len(parsed.rejections),
        "rejections": [{"index": r.index, "reason": r.reason, "detail": r.detail} for r in parsed.rejections],
    }
    return web.json_response(result, status=202 if parsed.events else 400)


async def healthz(request: web.Request) -> web.Response:
    """200 when Kafka and every topic are reachable, else 503."""
    ready = request.app[INGEST].publisher.ready()
    return web.json_response({"status": "ok" if ready else "unavailable"}, status=200 if ready else 503)


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = generate_latest(request.app[INGEST].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_doc(request: web.Request) -> web.Response:
    """Serve the OpenAPI description."""
    return web.Response(text=json.dumps(request.app[INGEST].openapi), content_type="application/json")


def create_app(
    tokens: TokenStore, limits: Limits, publisher: Publisher, metrics: IngestMetrics | None = None
) -> web.Application:
    """Build the application; the publisher is started and closed with it."""
    # aiohttp enforces the size itself for bodies sent without Content-Length (chunked).
    app = web.Application(client_max_size=limits.max_body_bytes)
    app[INGEST] = Ingest(tokens, limits, publisher, metrics or IngestMetrics(),
                         RateLimiter(limits.rate_per_s, limits.burst), build_openapi(limits))
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/openapi.json", openapi_doc)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await publisher.start()
        yield
        await publisher.close()

    app.cleanup_ctx.append(lifecycle)
    return app

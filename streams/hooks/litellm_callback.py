"""A LiteLLM callback that emits one ``llm.request`` event per successful call (SDK or proxy).

Needs the ``burnwatch[litellm]`` extra. In code: ``litellm.callbacks = [BurnwatchLogger(app="chat")]``.
On the LiteLLM proxy, in ``config.yaml``::

    litellm_settings:
      callbacks: streams.hooks.litellm_callback.proxy_handler_instance

Per call, ``metadata={"burnwatch": {"app": ..., "user": ..., "session": ..., "labels": {...}}}``
overrides the logger's defaults; on the proxy the key's team alias is the default app and the
``team`` label, and the request's ``user`` is the user. Answers served from LiteLLM's own cache cost
no provider tokens and are not emitted. The callback never raises into LiteLLM: a call it cannot
read is logged and counted in ``skipped``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from streams.hooks.emitter import UsageEmitter, default_emitter
from streams.hooks.usage import event_from_response, load_hash_key

log = logging.getLogger(__name__)


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    # LiteLLM stamps calls with naive datetime.now(), i.e. local time; astimezone reads it as such.
    return moment.astimezone(UTC)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class BurnwatchLogger(CustomLogger):
    """LiteLLM ``CustomLogger`` that turns each successful call's usage into an ``llm.request`` event.

    ``emitter`` defaults to the process-wide background emitter; ``hash_key`` to
    ``load_hash_key()`` (no key: no ``prompt_hash``).
    """

    def __init__(
        self,
        *,
        app: str = "unknown",
        labels: Mapping[str, str] | None = None,
        emitter: UsageEmitter | None = None,
        hash_key: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.labels = dict(labels or {})
        self.skipped = 0
        self._emitter = emitter
        self._hash_key = hash_key if hash_key is not None else load_hash_key()

    @property
    def emitter(self) -> UsageEmitter:
        """The emitter events go to (the process-wide one unless given)."""
        if self._emitter is None:
            self._emitter = default_emitter()
        return self._emitter

    def build_event(
        self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> dict[str, Any] | None:
        """Return the event for one LiteLLM success callback, or ``None`` for a cache hit or no usage."""
        if kwargs.get("cache_hit") is True:
            return None
        usage = response_obj.get("usage") if isinstance(response_obj, Mapping) else getattr(
            response_obj, "usage", None)
        if usage is None:
            return None
        params = _mapping(kwargs.get("litellm_params"))
        metadata = _mapping(params.get("metadata"))
        ours = _mapping(metadata.get("burnwatch"))
        standard = _mapping(kwargs.get("standard_logging_object"))
        provider = (kwargs.get("custom_llm_provider") or params.get("custom_llm_provider")
                    or standard.get("custom_llm_provider") or "unknown")
        team = metadata.get("user_api_key_team_alias")
        labels = {**({"team": str(team)} if team else {}), **self.labels, **_mapping(ours.get("labels"))}
        start, end = _aware(start_time), _aware(end_time)
        latency = (end - start).total_seconds() * 1000.0 if start and end and end >= start else None
        prompt = kwargs.get("messages") or kwargs.get("input")
        event = event_from_response(
            response_obj,
            provider=str(provider),
            prompt=prompt,
            hash_key=self._hash_key,
            app=str(ours.get("app") or team or self.app),
            user=ours.get("user") or kwargs.get("user") or standard.get("end_user") or None,
            session=ours.get("session") or params.get("litellm_session_id") or metadata.get("session_id"),
            labels=labels,
            time=end,
            latency_ms=latency,
            style="openai",  # LiteLLM normalises every provider's usage to the OpenAI shape
        )
        if event["model"] == "unknown" and kwargs.get("model"):
            event["model"] = str(kwargs["model"])
        return event

    def _emit(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            event = self.build_event(kwargs, response_obj, start_time, end_time)
        except Exception as error:  # noqa: BLE001 - a logging callback must never break the call
            self.skipped += 1
            log.warning("burnwatch: cannot build an llm.request event from a LiteLLM call: %s", error)
            return
        if event is not None:
            self.emitter.emit(event)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """LiteLLM's hook for synchronous calls."""
        self._emit(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """LiteLLM's hook for async calls and the proxy (``emit`` never blocks the event loop)."""
        self._emit(kwargs, response_obj, start_time, end_time)


# The instance the LiteLLM proxy's config names; it builds no Kafka client until the first event.
proxy_handler_instance = BurnwatchLogger()

"""``burnwatch ingest-server``: an HTTP endpoint that validates usage events and produces them to Kafka.

``auth`` (bearer tokens per source), ``limits`` (size and per-source rate), ``publish`` (Kafka with
acknowledgements awaited on the event loop), ``openapi`` (the served description), ``metrics`` and
``app`` (the aiohttp application).
"""

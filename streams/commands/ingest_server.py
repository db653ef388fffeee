"""``burnwatch ingest-server``: serve ``POST /v1/events`` and produce what it accepts to Kafka."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from streams.commands.common import CONFIG_OPTION, err_console, load_settings, setup_logging

ENV = "BURNWATCH_INGEST_"


def register(app: typer.Typer) -> None:
    """Add the ``ingest-server`` command."""

    @app.command("ingest-server")
    def ingest_server(
        host: Annotated[str, typer.Option(envvar=ENV + "HOST", help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
        port: Annotated[int, typer.Option(min=1, max=65_535, envvar=ENV + "PORT", help="Port.")] = 8080,
        tokens_file: Annotated[Path | None, typer.Option(
            "--tokens-file", envvar=ENV + "TOKENS_FILE",
            help="File of 'source: token' lines (and/or BURNWATCH_INGEST_TOKENS as a JSON object).",
        )] = None,
        max_body_bytes: Annotated[int, typer.Option(
            envvar=ENV + "MAX_BODY_BYTES", help="Largest body in bytes (413 above).")] = 4_194_304,
        max_events: Annotated[int, typer.Option(
            envvar=ENV + "MAX_EVENTS", help="Most events in one request.")] = 10_000,
        rate: Annotated[float, typer.Option(
            envvar=ENV + "RATE", help="Events per second per source, on average (429 above).")] = 5_000.0,
        burst: Annotated[float, typer.Option(
            envvar=ENV + "BURST", help="Events a source may send at once (>= --max-events).")] = 20_000.0,
        config: Path | None = CONFIG_OPTION,
    ) -> None:
        """Accept usage events over HTTP (one, an array, or CloudEvents), validated and produced to Kafka.

        Answers 202 only after Kafka acknowledged the accepted events; rejected ones go to usage.dlq.
        """
        from aiohttp import web

        from streams.ingest_server.app import create_app
        from streams.ingest_server.auth import load_tokens
        from streams.ingest_server.limits import Limits
        from streams.ingest_server.publish import KafkaPublisher

        settings = load_settings(config)
        try:
            tokens = load_tokens(tokens_file, os.environ)
            limits = Limits(max_body_bytes=max_body_bytes, max_events=max_events, rate_per_s=rate,
                            burst=burst)
        except ValueError as error:  # TokenError included; its messages never hold a token
            err_console.print(f"ingest-server: {error}", style="red", markup=False, highlight=False)
            raise typer.Exit(2) from None
        setup_logging(settings.log_level)
        server = create_app(tokens, limits, KafkaPublisher(settings))
        web.run_app(server, host=host, port=port, access_log=None, print=None)

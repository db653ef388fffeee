"""``burnwatch schema``: print the JSON Schema of usage events."""

from __future__ import annotations

import json

import typer

from streams.core.events import event_json_schema


def register(app: typer.Typer) -> None:
    """Add the ``schema`` command."""

    @app.command()
    def schema() -> None:
        """Print the JSON Schema of one usage event (gpu.sample, llm.request or storage.usage)."""
        typer.echo(json.dumps(event_json_schema(), indent=2))

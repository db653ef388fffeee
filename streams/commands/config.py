"""``burnwatch config show``: the effective settings and alerting config, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from streams.commands.common import fail, load_settings

config_app = typer.Typer(help="Show the effective configuration.", add_completion=False, no_args_is_help=True)


@config_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
) -> None:
    """Print every setting and the alerting config in effect (validated; secrets print as **********)."""
    from alerting.config import AlertingConfigError
    from streams.notifier_worker import load_alerting

    settings = load_settings(config)
    try:
        alerting = load_alerting(settings)
    except AlertingConfigError as error:
        raise fail(str(error), 2) from None
    doc = {"settings": settings.masked(), "alerting": alerting.masked()}
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group."""
    app.add_typer(config_app, name="config")

"""Helpers shared by the sub-commands: settings that fail with a readable message."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer
from rich.console import Console

from streams.settings import ConfigError, Settings, get_settings

err_console = Console(stderr=True)


def load_settings(config: Path | None = None) -> Settings:
    """Read settings (``config`` overrides ``BURNWATCH_CONFIG``); exit 2 naming each bad field."""
    if config is not None:
        if not config.is_file():
            err_console.print(f"[red]config file not found: {config}[/red]")
            raise typer.Exit(2)
        os.environ["BURNWATCH_CONFIG"] = str(config)
        get_settings.cache_clear()
    try:
        return get_settings()
    except ConfigError as error:
        err_console.print(str(error), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` in red on stderr (as plain text) and return the Exit to raise."""
    err_console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def setup_logging(level: str) -> None:
    """Log to stderr in one plain format."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML config file (same as BURNWATCH_CONFIG).")

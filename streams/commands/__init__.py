"""CLI sub-commands. Each module has a ``register(app)`` that adds its commands to the root app."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "worker",
    "simulate",
    "ingest",
    "tail",
    "replay",
    "prices",
    "schema",
    "allocation",
    "budgets",
    "spend",
    "gpu_agent",
    "ingest_server",
    "eval",
    "notifier",
    "silence",
    "config",
    "lag",
)


def register_all(app: typer.Typer) -> None:
    """Add every sub-command module's commands to ``app``."""
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"streams.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"streams.commands.{name}":
                raise
            continue  # not written yet
        module.register(app)

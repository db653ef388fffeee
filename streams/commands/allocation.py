"""``burnwatch allocation``: show the allocation mapping in use, validate a mapping file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.commands.common import CONFIG_OPTION, fail, load_settings
from streams.core.allocation import AllocationConfig, AllocationError, load_allocation

console = Console()
allocation_app = typer.Typer(
    help="Show and validate the allocation mapping (labels to teams, projects, business units).",
    no_args_is_help=True, add_completion=False,
)


def register(app: typer.Typer) -> None:
    """Add the ``allocation`` command group."""
    app.add_typer(allocation_app, name="allocation")


def _load(path: Path | None) -> AllocationConfig:
    try:
        return load_allocation(path)
    except AllocationError as error:
        raise fail(str(error)) from None


def _summary(config: AllocationConfig) -> str:
    return (f"version {config.version}: {len(config.aliases)} aliases, {len(config.lookups)} lookups, "
            f"{len(config.defaults)} defaults, {len(config.shared_costs.rules)} shared-cost rules; "
            f"required: {', '.join(config.required) or 'none'}")


def _render(config: AllocationConfig) -> None:
    console.print(f"[bold]Allocation mapping[/bold] {_summary(config)}", highlight=False)
    if config.description:
        console.print(config.description, markup=False, highlight=False)
    console.print("hierarchy: " + " > ".join(config.hierarchy) + "; all dimensions: "
                  + ", ".join(config.dimensions_all()), markup=False, highlight=False, soft_wrap=True)

    aliases = Table(title="Aliases (first non-empty label wins; record.<column> reads a column)",
                    title_justify="left")
    aliases.add_column("name")
    aliases.add_column("read from")
    for name in config.dimensions_all():
        aliases.add_row(name, ", ".join(config.sources_of(name)))
    for name, sources in config.aliases.items():
        if name not in config.dimensions_all():
            aliases.add_row(f"{name} (helper)", ", ".join(sources))
    console.print(aliases)

    lookups = Table(title="Lookups (in order; each fills only what is still unknown)", title_justify="left")
    for column in ("#", "from", "value", "sets"):
        lookups.add_column(column)
    for index, lookup in enumerate(config.lookups):
        for value, targets in lookup.resolved().items():
            sets = ", ".join(f"{k}={v}" for k, v in targets.items())
            lookups.add_row(str(index), lookup.from_, value, sets)
    console.print(lookups)

    defaults = Table(title="Defaults (per source type, over '*')", title_justify="left")
    defaults.add_column("source")
    defaults.add_column("sets")
    for source, targets in config.defaults.items():
        defaults.add_row(source, ", ".join(f"{k}={v}" for k, v in targets.items()))
    console.print(defaults)

    if config.shared_costs.rules:
        shared = Table(title=f"Shared costs ({config.shared_costs.mode}; first matching rule wins)",
                       title_justify="left")
        for column in ("rule", "match", "split", "across", "among / weights"):
            shared.add_column(column)
        for rule in config.shared_costs.rules:
            match = ", ".join(f"{k}={v}" for k, v in rule.match.items())
            among = (", ".join(f"{k}:{v:g}" for k, v in rule.weights.items()) if rule.weights
                     else ", ".join(rule.among or []) or "every recipient with usage")
            shared.add_row(rule.name, match, rule.split, rule.dimension, among)
        console.print(shared)


@allocation_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole mapping as JSON.")] = False,
    mapping: Annotated[Path | None, typer.Option(
        "--mapping", help="Mapping file (default: the allocation_path setting, else the packaged one)."
    )] = None,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show the allocation mapping in use: tables, or the full mapping as JSON."""
    # allocation_path joins Settings when the lead wires allocation into the worker
    path = mapping if mapping is not None else getattr(load_settings(config), "allocation_path", None)
    mapping_config = _load(path)
    if as_json:
        doc = mapping_config.model_dump(mode="json", by_alias=True, exclude_none=True)
        typer.echo(json.dumps(doc, indent=2))
        return
    _render(mapping_config)


@allocation_app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="Allocation mapping YAML file to check.")]) -> None:
    """Check a mapping file; exit 1 listing each error with its file, key path and bad value."""
    mapping_config = _load(file)
    console.print(f"{file}: ok ({_summary(mapping_config)})", markup=False, highlight=False, soft_wrap=True)

"""``burnwatch prices``: show the price catalog in use, validate a catalog file, import LiteLLM prices."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.commands.common import CONFIG_OPTION, fail, load_settings
from streams.core.catalog import CatalogError, PriceCatalog, load_catalog, parse_catalog
from streams.core.litellm_import import catalog_document, llm_entries, read_litellm, to_yaml

console = Console()
err_console = Console(stderr=True)
prices_app = typer.Typer(
    help="Show, validate and import price catalogs.", no_args_is_help=True, add_completion=False
)

PER_MILLION = 1_000_000


def register(app: typer.Typer) -> None:
    """Add the ``prices`` command group."""
    app.add_typer(prices_app, name="prices")


def _load(path: Path | None) -> PriceCatalog:
    try:
        return load_catalog(path)
    except CatalogError as error:
        raise fail(str(error)) from None


def _period(entry: object) -> str:
    start, end = getattr(entry, "effective_from", None), getattr(entry, "effective_to", None)
    if start is None and end is None:
        return "always"
    return f"{start.date() if start else '…'} – {end.date() if end else '…'}"


def _money(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _render(catalog: PriceCatalog, llm_models: bool) -> None:
    console.print(f"[bold]Price catalog[/bold] version [cyan]{catalog.version}[/cyan] "
                  f"({catalog.currency}; GB = 2^30 bytes; month = 730 h)")
    if catalog.description:
        console.print(catalog.description)

    gpu = Table(title=f"GPU ({len(catalog.gpu)} entries)", title_justify="left")
    for column in ("provider", "instance type", "GPU model", "GPUs", "region", "pricing", "USD/GPU-h",
                   "effective"):
        gpu.add_column(column, justify="right" if column in ("GPUs", "USD/GPU-h") else "left")
    for g in catalog.gpu:
        gpu.add_row(g.provider, g.instance_type or "", g.gpu_model or "", str(g.gpus_per_instance or ""),
                    g.region, g.pricing, _money(g.usd_per_gpu_hour), _period(g))
    console.print(gpu)

    llm = Table(title=f"LLM tokens ({len(catalog.llm)} models), USD per 1M tokens", title_justify="left")
    if llm_models:
        for column in ("provider", "model", "input", "cached", "cache write", "output", "reasoning",
                       "batch in/out"):
            llm.add_column(column, justify="left" if column in ("provider", "model") else "right")
        for m in catalog.llm:
            def per_m(value: float | None) -> str:
                return _money(None if value is None else value * PER_MILLION, 3)

            batch = (f"{per_m(m.batch_input_usd_per_token)}/{per_m(m.batch_output_usd_per_token)}"
                     if m.batch_input_usd_per_token is not None else
                     (f"-{m.batch_discount_pct:g}%" if m.batch_discount_pct else "—"))
            llm.add_row(m.provider, m.model, per_m(m.input_usd_per_token),
                        per_m(m.cached_input_usd_per_token), per_m(m.cache_write_usd_per_token),
                        per_m(m.output_usd_per_token), per_m(m.reasoning_usd_per_token), batch)
    else:
        for column in ("provider", "models", "input min–max", "output min–max"):
            llm.add_column(column, justify="left" if column == "provider" else "right")
        by_provider: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for m in catalog.llm:
            by_provider[m.provider].append((m.input_usd_per_token, m.output_usd_per_token))
        for provider, rows in sorted(by_provider.items()):
            ins, outs = [r[0] * PER_MILLION for r in rows], [r[1] * PER_MILLION for r in rows]
            llm.add_row(provider, str(len(rows)), f"{min(ins):,.3f}–{max(ins):,.3f}",
                        f"{min(outs):,.3f}–{max(outs):,.3f}")
    console.print(llm)

    storage = Table(title=f"Storage and egress ({len(catalog.storage) + len(catalog.egress)} entries)",
                    title_justify="left")
    for column in ("provider", "region", "what", "USD", "per", "effective"):
        storage.add_column(column, justify="right" if column == "USD" else "left")
    for s in catalog.storage:
        storage.add_row(s.provider, s.region, s.storage_class, _money(s.usd_per_gb_month, 5), "GB-month",
                        _period(s))
    for e in catalog.egress:
        storage.add_row(e.provider, e.region, f"egress → {e.destination}", _money(e.usd_per_gb, 5), "GB",
                        _period(e))
    console.print(storage)

    if catalog.discounts:
        discounts = Table(title="Discounts (most specific match wins)", title_justify="left")
        for column in ("service", "provider", "model", "instance type", "% off", "effective"):
            discounts.add_column(column, justify="right" if column == "% off" else "left")
        for d in catalog.discounts:
            discounts.add_row(d.service or "any", d.provider or "any", d.model or "", d.instance_type or "",
                              f"{d.pct:g}", _period(d))
        console.print(discounts)
    for source in catalog.sources:
        console.print(f"[dim]source: {source.name}{' — ' + source.url if source.url else ''}[/dim]")


@prices_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole catalog as JSON.")] = False,
    catalog_file: Annotated[Path | None, typer.Option(
        "--catalog", help="Catalog file (default: the catalog_path setting, else the packaged one).")] = None,
    llm_models: Annotated[bool, typer.Option(
        "--llm-models", help="List every LLM model instead of a per-provider summary.")] = False,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show the price catalog in use: a table summary, or the full catalog as JSON."""
    path = catalog_file if catalog_file is not None else load_settings(config).catalog_path
    catalog = _load(path)
    if as_json:
        typer.echo(json.dumps(catalog.model_dump(mode="json", exclude_none=True), indent=2))
        return
    _render(catalog, llm_models)


@prices_app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="Catalog YAML file to check.")]) -> None:
    """Check a catalog file; exit 1 listing each error with its file, key path and bad value."""
    catalog = _load(file)
    console.print(
        f"{file}: ok (version {catalog.version}: {len(catalog.gpu)} gpu, {len(catalog.llm)} llm, "
        f"{len(catalog.storage)} storage, {len(catalog.egress)} egress, {len(catalog.discounts)} discounts)",
        markup=False, highlight=False, soft_wrap=True,
    )


@prices_app.command("import-litellm")
def import_litellm(
    file: Annotated[Path, typer.Argument(help="LiteLLM model_prices_and_context_window.json")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the catalog here (default: stdout).")] = None,
    providers: Annotated[str | None, typer.Option(
        "--providers", help="Providers to keep, e.g. openai,anthropic (default: all).")] = None,
    active_on: Annotated[str | None, typer.Option(
        "--active-on", help="Drop models deprecated before this day (YYYY-MM-DD).")] = None,
    drop_regional: Annotated[bool, typer.Option(
        "--drop-regional", help="Drop per-region copies (eu/gpt-4o, us.anthropic.*, ...).")] = False,
    version: Annotated[str | None, typer.Option(
        "--version", help="Catalog version (default: litellm-<content hash>).")] = None,
    extends: Annotated[str, typer.Option(
        "--extends", help="Base catalog: 'default', a path, or '' for a standalone file.")] = "default",
) -> None:
    """Convert LiteLLM's price file into catalog llm entries (chat/completion/responses models only)."""
    try:
        data, digest = read_litellm(file)
    except OSError as error:
        raise fail(f"{file}: cannot read the file ({error.strerror})") from None
    except ValueError as error:
        raise fail(str(error)) from None
    try:
        day = date.fromisoformat(active_on) if active_on else None
    except ValueError:
        raise fail(f"--active-on: must be a date YYYY-MM-DD (got {active_on!r})") from None
    wanted = [p for p in (providers or "").split(",") if p.strip()] or None
    result = llm_entries(data, providers=wanted, active_on=day, drop_regional=drop_regional)
    doc = catalog_document(result, version=version or f"litellm-{digest}", source_name=file.name,
                           extends=extends or None)
    try:
        parse_catalog(doc, str(out or "<output>"))
    except CatalogError as error:
        raise fail(str(error)) from None
    text = to_yaml(doc)
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.skipped.items()))
    summary = f"{len(result.entries)} llm entries from {len(data)} LiteLLM keys"
    summary += f" (skipped: {skipped or 'none'})"
    if out is None:
        typer.echo(text, nl=False)
        err_console.print(summary, markup=False, highlight=False, soft_wrap=True)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"{summary}; wrote {out}", markup=False, highlight=False, soft_wrap=True)

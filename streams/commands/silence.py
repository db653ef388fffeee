"""``burnwatch silence add|list|expire``: mute matching alerts for a while, on every notifier."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.commands.common import fail, load_settings

console = Console()
silence_app = typer.Typer(
    help="Mute alerts that match labels for a while (kept in the compacted alert.silences topic).",
    add_completion=False, no_args_is_help=True,
)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]


def _duration(text: str) -> timedelta:
    from alerting.config import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise typer.BadParameter("the duration must be positive, like 30m, 2h or 1d")
    return value


@silence_app.command("add")
def add(
    matchers: Annotated[list[str], typer.Argument(help="Label matchers: team=ml, kind=~idle_.*, env!=dev.")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required).")],
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long: 30m, 2h, 1d.")] = "2h",
    author: Annotated[str | None, typer.Option("--author", "-a", help="Who (default: your user).")] = None,
    starts_at: Annotated[
        datetime | None, typer.Option("--starts-at", help="Start later (ISO time, UTC if naive).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a silence; every notifier applies it to the next messages it decides (within seconds)."""
    from pydantic import ValidationError

    from alerting.silences import Silence
    from streams.notifier_silences import SilenceTopicMissing, publish_silence

    settings = load_settings(config)
    now = datetime.now(UTC)
    start = starts_at.replace(tzinfo=starts_at.tzinfo or UTC) if starts_at else None
    try:
        silence = Silence.new(matchers, _duration(duration), author=author or getpass.getuser(),
                              comment=comment, now=now, starts_at=start)
    except (ValidationError, ValueError) as error:
        raise fail(f"bad silence: {error}", 2) from None
    try:
        publish_silence(settings, silence)
    except SilenceTopicMissing as error:
        raise fail(str(error)) from None
    typer.echo(silence.id)


@silence_app.command("list")
def list_silences(
    show_all: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """List active and future silences (soonest end first)."""
    from alerting.silences import active
    from streams.notifier_silences import SilenceTopicMissing, read_silences

    settings = load_settings(config)
    try:
        known = read_silences(settings)
    except SilenceTopicMissing as error:
        raise fail(str(error)) from None
    now = datetime.now(UTC)
    shown = sorted(known, key=lambda s: s.ends_at) if show_all else active(known, now)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in shown], indent=2))
        return
    table = Table(title=f"{len(shown)} silences", title_justify="left")
    for column in ("id", "matchers", "starts", "ends", "state", "author", "comment"):
        table.add_column(column)
    for s in shown:
        state = "active" if s.is_active(now) else ("pending" if s.starts_at > now else "expired")
        table.add_row(s.id, ", ".join(str(m) for m in s.matchers), s.starts_at.isoformat(timespec="seconds"),
                      s.ends_at.isoformat(timespec="seconds"), state, s.created_by, s.comment)
    console.print(table)


@silence_app.command("expire")
def expire(
    silence_id: Annotated[str, typer.Argument(help="The id printed by `silence add` or `silence list`.")],
    config: ConfigOpt = None,
) -> None:
    """End a silence now (it is written again with ends_at = now)."""
    from streams.notifier_silences import SilenceTopicMissing, publish_silence, read_silences

    settings = load_settings(config)
    try:
        found = {s.id: s for s in read_silences(settings)}
        if silence_id not in found:
            raise fail(f"no silence {silence_id}")
        publish_silence(settings, found[silence_id].expire(datetime.now(UTC)))
    except SilenceTopicMissing as error:
        raise fail(str(error)) from None
    typer.echo(f"expired {silence_id}")


def register(app: typer.Typer) -> None:
    """Add the ``silence`` command group."""
    app.add_typer(silence_app, name="silence")

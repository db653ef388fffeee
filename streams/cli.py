"""The ``burnwatch`` command line: one sub-command per module in ``streams/commands``."""

from __future__ import annotations

import typer

from streams.commands import register_all

app = typer.Typer(
    name="burnwatch",
    help="Real-time spend guard for AI workloads: prices GPU, LLM and storage usage as it happens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """burnwatch: prices every usage event as it happens and pages within seconds."""


register_all(app)

if __name__ == "__main__":  # pragma: no cover
    app()

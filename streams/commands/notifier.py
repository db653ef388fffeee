"""``burnwatch notifier``: deliver alerts from the ``alerts`` topic to Slack, PagerDuty and the rest."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.commands.common import CONFIG_OPTION, fail, load_settings, setup_logging


def register(app: typer.Typer) -> None:
    """Add the ``notifier`` command."""

    @app.command()
    def notifier(config: Path | None = CONFIG_OPTION) -> None:
        """Run a notifier: route, group, silence and deliver alerts (scale out by running more)."""
        import faust

        from alerting.config import AlertingConfigError
        from streams.admin import ensure_topics
        from streams.notifier_worker import build_notifier

        settings = load_settings(config)
        setup_logging(settings.log_level)
        try:
            built = build_notifier(settings)
        except AlertingConfigError as error:
            raise fail(str(error), 2) from None
        ensure_topics(settings)
        built.silences.start()
        process = faust.Worker(built.app, loglevel=settings.log_level.lower(), redirect_stdouts=False)
        process.execute_from_commandline()

"""A notifier that also writes numbered probes to its state table's changelog partition 0, as fast as it can.

``test_notifier_changelog_prefix.py`` kills it with SIGKILL mid-stream and reads what reached the
broker. Run as ``python -m tests.integration.changelog_probe`` with the stack's ``BURNWATCH_*`` env.
"""

from __future__ import annotations

import asyncio
import itertools

import faust

from streams.admin import ensure_topics
from streams.core.alert_group_store import put
from streams.notifier_worker import build_notifier
from streams.settings import get_settings

PROBE_PREFIX = "probe|"
REPORT_EVERY = 2_000


def main() -> None:
    settings = get_settings()
    built = build_notifier(settings)
    ensure_topics(settings)
    table = built.tables.state

    @built.app.task
    async def probe() -> None:
        await built.app.tables.recovery.completed.wait()
        for number in itertools.count():
            # partition -1: no partition's groups or outbox, whatever the notifier reads back
            put(table, 0, f"{PROBE_PREFIX}{number:09d}", {"partition": -1, "probe": number})
            if number % 100 == 99:
                await asyncio.sleep(0.005)  # the producer sends while the probe goes on, a little behind it
            if number % REPORT_EVERY == 0:
                print(f"probes written: {number}", flush=True)

    faust.Worker(built.app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()

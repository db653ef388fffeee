"""What every timer of burnwatch's workers shares: a send cut off by the worker's own stop is no crash."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from faust.exceptions import NotReady


def quiet_at_stop(app: Any) -> Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    """Wrap a timer so that a send refused because the worker is stopping ends it quietly.

    A timer may be sending when the worker stops: faust stops the producer before it cancels the
    timers, and the send raises ``NotReady``, which faust logged as the app crashing. What was not sent
    is sent by the next owner (its rebuild republishes). Any other failure, or ``NotReady`` while the
    app runs, still raises.

    >>> import asyncio
    >>> from types import SimpleNamespace
    >>> async def send() -> None:
    ...     raise NotReady("Producer service not yet started")
    >>> asyncio.run(quiet_at_stop(SimpleNamespace(should_stop=True))(send)())
    >>> asyncio.run(quiet_at_stop(SimpleNamespace(should_stop=False))(send)())
    Traceback (most recent call last):
    faust.exceptions.NotReady: Producer service not yet started
    """
    def wrap(timer: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @functools.wraps(timer)
        async def run() -> None:
            try:
                await timer()
            except NotReady:
                if not app.should_stop:
                    raise
        return run
    return wrap

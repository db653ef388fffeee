"""Silences: mute matching alerts for a while, with an author and a reason.

A silence is a plain value. The stream shell keeps them in a compacted topic (key: ``id``, value:
``encode(silence)``) read into a global table, so every notifier worker sees the same set; expiring a
silence is writing it again with ``ends_at`` set to now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerting.matchers import Matcher, match_all


class Silence(BaseModel):
    """A time-boxed mute of every alert whose labels match all ``matchers``.

    >>> from datetime import datetime, timedelta, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> s = Silence.new(["team=ml", "kind=idle_gpu"], timedelta(hours=2), author="ana",
    ...                 comment="planned drain", now=t, silence_id="s1")
    >>> s.mutes({"team": "ml", "kind": "idle_gpu"}, t + timedelta(hours=1))
    True
    >>> s.mutes({"team": "ml", "kind": "idle_gpu"}, t + timedelta(hours=3))
    False
    >>> s.expire(t + timedelta(minutes=5)).is_active(t + timedelta(minutes=6))
    False
    >>> decode(encode(s)) == s
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    matchers: tuple[Matcher, ...] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    created_by: str = Field(min_length=1)
    comment: str = Field(min_length=1)
    created_at: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends_at < self.starts_at:
            raise ValueError("ends_at is before starts_at")
        return self

    @classmethod
    def new(
        cls,
        matchers: Iterable[Matcher | str],
        duration: timedelta,
        *,
        author: str,
        comment: str,
        now: datetime,
        starts_at: datetime | None = None,
        silence_id: str | None = None,
    ) -> Silence:
        """Create a silence that starts at ``starts_at`` (default ``now``) and lasts ``duration``."""
        start = starts_at or now
        return cls(
            id=silence_id or uuid.uuid4().hex,
            matchers=tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers),
            starts_at=start,
            ends_at=start + duration,
            created_by=author,
            comment=comment,
            created_at=now,
        )

    def is_active(self, now: datetime) -> bool:
        """Return whether the silence mutes at ``now``."""
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Return whether the silence is active at ``now`` and matches ``labels``."""
        return self.is_active(now) and match_all(self.matchers, labels)

    def expire(self, now: datetime) -> Silence:
        """Return this silence ended at ``now`` (unchanged if it already ended)."""
        if self.ends_at <= now:
            return self
        return self.model_copy(update={"ends_at": max(now, self.starts_at)})


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], now: datetime) -> Silence | None:
    """Return the first silence that mutes ``labels`` at ``now``, if any."""
    return next((s for s in silences if s.mutes(labels, now)), None)


def active(silences: Iterable[Silence], now: datetime) -> list[Silence]:
    """Return the silences active at ``now`` or starting later, soonest end first (for ``silence list``)."""
    return sorted((s for s in silences if s.ends_at > now), key=lambda s: s.ends_at)


def encode(silence: Silence) -> bytes:
    """Serialise a silence for the compacted silences topic."""
    return silence.model_dump_json().encode()


def decode(data: bytes | str) -> Silence:
    """Read a silence written by ``encode``; raises ``pydantic.ValidationError`` on bad input."""
    return Silence.model_validate_json(data)


def decode_all(values: Sequence[bytes | str]) -> list[Silence]:
    """Read many encoded silences, keeping the last value per id (as topic compaction does)."""
    latest: dict[str, Silence] = {}
    for value in values:
        silence = decode(value)
        latest[silence.id] = silence
    return list(latest.values())

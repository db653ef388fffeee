"""Label matchers, shared by routes, inhibition rules, silences and maintenance windows.

The syntax is Alertmanager's: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``; regexes
are anchored at both ends. An alert's labels are its entity, its labels, and ``kind``, ``severity``,
``status`` and ``fingerprint``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from alerting.model import Alert

Op = Literal["=", "!=", "=~", "!~"]
_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class Matcher(BaseModel):
    """One condition on one label; a missing label matches as the empty string.

    >>> m = Matcher.parse("kind=~idle_.*")
    >>> m.matches({"kind": "idle_gpu"}), m.matches({"kind": "token_runaway"})
    (True, False)
    >>> Matcher.parse("team!=ml").matches({})
    True
    >>> str(Matcher.parse(' team = "ml" '))
    'team="ml"'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: Op = "="
    value: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        if isinstance(data, str):
            return cls._split(data)
        return data

    @model_validator(mode="after")
    def _check_regex(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                _compiled(self.value)
            except re.error as error:
                raise ValueError(f"bad regex {self.value!r} in matcher for {self.name!r}: {error}") from None
        return self

    @staticmethod
    def _split(text: str) -> dict[str, str]:
        found = _SYNTAX.match(text)
        if not found:
            raise ValueError(f"matcher {text!r} is not name=value, name!=value, name=~regex or name!~regex")
        name, op, value = found.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return {"name": name, "op": op, "value": value}

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Build a matcher from its text form, e.g. ``team=ml`` or ``kind=~idle_.*``."""
        return cls.model_validate(text)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether ``labels`` satisfy this matcher."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = _compiled(self.value).fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Return whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


def alert_labels(alert: Alert) -> dict[str, str]:
    """Return the label set that matchers see for ``alert``.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> a = Alert.firing("idle_gpu", {"node": "n1"}, severity="warning", summary="idle", started_at=t,
    ...                  detected_at=t, labels={"team": "ml"})
    >>> labels = alert_labels(a)
    >>> labels["node"], labels["team"], labels["kind"], labels["severity"]
    ('n1', 'ml', 'idle_gpu', 'warning')
    """
    return {
        **alert.entity,
        **alert.labels,
        "kind": alert.kind,
        "severity": alert.severity,
        "status": alert.status,
        "fingerprint": alert.fingerprint,
    }

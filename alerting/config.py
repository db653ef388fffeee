"""Alerting configuration: receivers, the routing tree, grouping, inhibition, maintenance, delivery.

Validated once at start-up; every error names the field (``receivers.pd.routing_key_env: ...``).
Secrets (Slack token, Slack webhook URL, PagerDuty routing key, webhook secret) are ``SecretStr`` and
come from the config value itself, an environment variable (``<field>_env``) or a file
(``<field>_file``, as Docker and Kubernetes mount secrets); they print as ``**********``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from alerting.matchers import Matcher, match_all
from alerting.model import ALERT_KINDS, Severity
from alerting.secret_fields import may_be_secret

_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$"
)
SEVERITIES: tuple[Severity, ...] = ("critical", "error", "warning", "info")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class AlertingConfigError(Exception):
    """The alerting config is invalid; the message has one line per bad field."""


def parse_duration(value: object) -> object:
    """Accept ``90``, ``"90s"``, ``"5m"``, ``"4h"``, ``"1d"``, ``"1h30m"`` (and timedelta) as a duration.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration(45)
    datetime.timedelta(seconds=45)
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 5m, 4h, 1d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        found = _DURATION.match(value.strip())
        if found and any(found.groups()):
            d, h, m, s = (float(g) if g else 0.0 for g in found.groups())
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 4h, 1d or 1h30m")
    return value


def format_duration(value: timedelta) -> str:
    """Write a duration the way the config reads it.

    >>> format_duration(timedelta(hours=4)), format_duration(timedelta(seconds=90))
    ('4h', '90s')
    """
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    Field(ge=timedelta(0)),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- secrets -------------------------------------------------------------------------------------


def _resolve_secrets(
    data: Any, info: ValidationInfo, names: tuple[str, ...], required: tuple[str, ...]
) -> Any:
    """Fill ``<name>`` from ``<name>_env`` or ``<name>_file`` before field validation."""
    if not isinstance(data, dict):
        return data
    env: Mapping[str, str] = (info.context or {}).get("env", os.environ)
    data = dict(data)
    for name in names:
        from_env, from_file = data.get(f"{name}_env"), data.get(f"{name}_file")
        given = [
            k
            for k, v in ((name, data.get(name)), (f"{name}_env", from_env), (f"{name}_file", from_file))
            if v
        ]
        if len(given) > 1:
            raise ValueError(f"{name}: set only one of {', '.join(given)}")
        if from_env:
            if not env.get(str(from_env)):
                raise ValueError(f"{name}_env: environment variable {from_env} is not set or empty")
            data[name] = env[str(from_env)].strip()
        elif from_file:
            path = Path(str(from_file))
            if not path.is_file():
                raise ValueError(f"{name}_file: secret file {path} does not exist")
            secret = path.read_text(encoding="utf-8").strip()
            if not secret:
                raise ValueError(f"{name}_file: secret file {path} is empty")
            data[name] = secret
        elif name in required and not data.get(name):
            raise ValueError(f"{name}: required; set {name}_env (an environment variable) or {name}_file")
    return data


def _http_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field}: {value!r} is not an http(s) URL")
    return value


# --- receivers -----------------------------------------------------------------------------------


class ConsoleReceiverConfig(_Model):
    """Print one line per notification (the default, so the demo needs no accounts)."""

    type: Literal["console"] = "console"


class JsonlReceiverConfig(_Model):
    """Append one JSON line per notification to ``path``."""

    type: Literal["jsonl"] = "jsonl"
    path: Path = Path(".burnwatch/notifications.jsonl")


class SlackReceiverConfig(_Model):
    """Slack Web API with a bot token: one message per incident, updates in its thread."""

    type: Literal["slack"] = "slack"
    channel: str = Field(min_length=1)
    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None
    base_url: str = "https://slack.com/api/"
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        return _resolve_secrets(data, info, ("token",), ("token",))

    @model_validator(mode="after")
    def _check(self) -> SlackReceiverConfig:
        _http_url(self.base_url, "base_url")
        if not self.base_url.endswith("/"):
            raise ValueError("base_url: must end with '/' (slack-sdk appends the method name)")
        return self


class SlackWebhookReceiverConfig(_Model):
    """A Slack incoming webhook (no threads: each notification is a message). The URL is a secret."""

    type: Literal["slack_webhook"] = "slack_webhook"
    url: SecretStr | None = None
    url_env: str | None = None
    url_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        return _resolve_secrets(data, info, ("url",), ("url",))

    @model_validator(mode="after")
    def _check(self) -> SlackWebhookReceiverConfig:
        if self.url is not None:
            parts = urlsplit(self.url.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("url: not an http(s) URL")
        return self


class PagerDutyReceiverConfig(_Model):
    """PagerDuty Events API v2: trigger, then resolve, by ``dedup_key`` (see ``retrigger_on_update``)."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr | None = None
    routing_key_env: str | None = None
    routing_key_file: Path | None = None
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severity_map: dict[str, Severity] = Field(default_factory=lambda: {str(s): s for s in SEVERITIES})
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Off: one page per incident (trigger, then resolve); updates go to Slack. On: each update triggers again.
    retrigger_on_update: bool = False

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        return _resolve_secrets(data, info, ("routing_key",), ("routing_key",))

    @model_validator(mode="after")
    def _check(self) -> PagerDutyReceiverConfig:
        _http_url(self.url, "url")
        unknown = sorted(set(self.severity_map) - set(SEVERITIES))
        if unknown:
            raise ValueError(f"severity_map: unknown severities {unknown} (known: {SEVERITIES})")
        return self


class WebhookReceiverConfig(_Model):
    """A generic JSON webhook, signed with HMAC-SHA256 when a secret is set."""

    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    signature_header: str = "X-Burnwatch-Signature"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        return _resolve_secrets(data, info, ("secret",), ())

    @model_validator(mode="after")
    def _check(self) -> WebhookReceiverConfig:
        _http_url(self.url, "url")
        return self


class HttpActionConfig(_Model):
    """An HTTP call; ``url`` and string values in ``body`` are ``$name`` templates over alert labels."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class CommandActionConfig(_Model):
    """A command run without a shell; each ``argv`` item is a ``$name`` template over alert labels."""

    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)


class RunbookActionConfig(_Model):
    """What to do for one alert kind: exactly one of ``http`` or ``command``."""

    http: HttpActionConfig | None = None
    command: CommandActionConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> RunbookActionConfig:
        if (self.http is None) == (self.command is None):
            raise ValueError("set exactly one of http or command")
        return self


class RateLimitConfig(_Model):
    """At most ``max_runs`` actions per ``per`` for one receiver."""

    max_runs: int = Field(default=5, ge=1)
    per: Duration = timedelta(hours=1)


class RunbookReceiverConfig(_Model):
    """Runbook actions per alert kind, guarded by dry-run, allow-lists, a rate limit and approval."""

    type: Literal["runbook"] = "runbook"
    actions: dict[str, RunbookActionConfig]
    dry_run: bool = True
    allowed_commands: list[str] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    rate_limit: RateLimitConfig = RateLimitConfig()
    approval: Literal["none", "required"] = "none"

    @model_validator(mode="after")
    def _check(self) -> RunbookReceiverConfig:
        for kind, action in self.actions.items():
            if kind not in ALERT_KINDS:
                raise ValueError(f"actions.{kind}: unknown alert kind (known: {', '.join(ALERT_KINDS)})")
            if action.http is not None:
                host = urlsplit(action.http.url).hostname or ""
                if "$" in host:
                    raise ValueError(f"actions.{kind}.http.url: the host may not be templated")
                if host not in self.allowed_hosts:
                    raise ValueError(f"actions.{kind}.http.url: host {host!r} is not in allowed_hosts")
            if action.command is not None and action.command.argv[0] not in self.allowed_commands:
                raise ValueError(
                    f"actions.{kind}.command.argv: {action.command.argv[0]!r} is not in allowed_commands"
                )
        return self


ReceiverConfig = Annotated[
    ConsoleReceiverConfig
    | JsonlReceiverConfig
    | SlackReceiverConfig
    | SlackWebhookReceiverConfig
    | PagerDutyReceiverConfig
    | WebhookReceiverConfig
    | RunbookReceiverConfig,
    Field(discriminator="type"),
]


# --- policy --------------------------------------------------------------------------------------


class Timing(_Model):
    """How long a group waits before its first message, between updates, and before repeating."""

    group_wait: Duration
    group_interval: Duration
    repeat_interval: Duration


# Faster than Alertmanager's 30s / 5m / 4h for critical spend: a runaway burns dollars every minute.
DEFAULT_TIMING: dict[str, Timing] = {
    "critical": Timing(
        group_wait=timedelta(seconds=5),
        group_interval=timedelta(minutes=1),
        repeat_interval=timedelta(hours=1),
    ),
    "error": Timing(
        group_wait=timedelta(seconds=15),
        group_interval=timedelta(minutes=2),
        repeat_interval=timedelta(hours=2),
    ),
    "warning": Timing(
        group_wait=timedelta(seconds=30),
        group_interval=timedelta(minutes=5),
        repeat_interval=timedelta(hours=4),
    ),
    "info": Timing(
        group_wait=timedelta(minutes=1),
        group_interval=timedelta(minutes=10),
        repeat_interval=timedelta(hours=12),
    ),
}
DEFAULT_GROUP_BY = ("team", "env", "kind")
GROUP_BY_ALERT = "..."


class TimingOverride(_Model):
    """Some of a ``Timing``; unset fields keep the severity default."""

    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None

    def over(self, base: Timing) -> Timing:
        """Return ``base`` with the fields set here replaced."""
        return Timing(
            group_wait=base.group_wait if self.group_wait is None else self.group_wait,
            group_interval=base.group_interval if self.group_interval is None else self.group_interval,
            repeat_interval=base.repeat_interval if self.repeat_interval is None else self.repeat_interval,
        )


class RouteConfig(_Model):
    """A node of the routing tree; children inherit receivers, ``group_by`` and timing they leave unset.

    The first matching child takes the alert unless it sets ``continue: true``; when no child matches,
    the node itself delivers. ``group_by: ["..."]`` makes every alert its own group.
    """

    name: str | None = None
    matchers: list[Matcher] = Field(default_factory=list)
    receivers: list[str] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[RouteConfig] = Field(default_factory=list)

    def override(self) -> TimingOverride:
        """Return this route's own timing settings."""
        return TimingOverride(
            group_wait=self.group_wait,
            group_interval=self.group_interval,
            repeat_interval=self.repeat_interval,
        )


class TeamDefaults(_Model):
    """Where a team's alerts go when no explicit route takes them (from the allocation config)."""

    receivers: list[str] = Field(min_length=1)
    group_by: list[str] | None = None


class InhibitRule(_Model):
    """While a ``source`` alert fires, ``target`` alerts with the same ``equal`` labels are muted."""

    name: str
    source_matchers: list[Matcher] = Field(min_length=1)
    target_matchers: list[Matcher] = Field(min_length=1)
    equal: list[str] = Field(min_length=1)


DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule(
        name="budget-exceeded-mutes-its-lower-thresholds",
        source_matchers=[
            Matcher.parse("kind=budget_threshold"),
            Matcher.parse(r"threshold_pct=~[1-9][0-9]{2,}(\.[0-9]+)?"),
        ],
        target_matchers=[
            Matcher.parse("kind=budget_threshold"),
            Matcher.parse(r"threshold_pct=~[0-9]{1,2}(\.[0-9]+)?"),
        ],
        equal=["budget"],
    ),
    InhibitRule(
        name="budget-exceeded-mutes-its-forecast",
        source_matchers=[
            Matcher.parse("kind=budget_threshold"),
            Matcher.parse(r"threshold_pct=~[1-9][0-9]{2,}(\.[0-9]+)?"),
        ],
        target_matchers=[Matcher.parse("kind=budget_forecast")],
        equal=["budget"],
    ),
    InhibitRule(
        name="telemetry-gap-mutes-idle-gpu",
        source_matchers=[Matcher.parse("kind=telemetry_gap")],
        target_matchers=[Matcher.parse("kind=~idle_gpu|gpu_underused")],
        equal=["node"],
    ),
)


class MaintenanceWindow(_Model):
    """Mute matching alerts during a fixed period (``starts_at``/``ends_at``) or weekly (UTC)."""

    name: str
    matchers: list[Matcher] = Field(default_factory=list)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(default_factory=list)
    start: time | None = None
    duration: Duration | None = None

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        fixed = self.starts_at is not None or self.ends_at is not None
        weekly = bool(self.weekdays) or self.start is not None or self.duration is not None
        if fixed == weekly:
            raise ValueError("set either starts_at and ends_at, or weekdays, start and duration")
        if fixed and (self.starts_at is None or self.ends_at is None or self.ends_at <= self.starts_at):
            raise ValueError("ends_at: needs starts_at and ends_at with ends_at after starts_at")
        if weekly and (not self.weekdays or self.start is None or not self.duration):
            raise ValueError("weekdays, start, duration: a weekly window needs all three")
        return self

    def is_active(self, now: datetime) -> bool:
        """Return whether the window covers ``now`` (weekly windows are in UTC)."""
        if self.starts_at is not None and self.ends_at is not None:
            return self.starts_at <= now < self.ends_at
        assert self.start is not None and self.duration is not None  # noqa: S101 - checked in _shape
        for back in range(8):
            day = (now - timedelta(days=back)).date()
            if WEEKDAYS[day.weekday()] in self.weekdays:
                opens = datetime.combine(day, self.start, tzinfo=now.tzinfo)
                if opens <= now < opens + self.duration:
                    return True
        return False

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Return whether the window is active at ``now`` and matches ``labels``."""
        return self.is_active(now) and match_all(self.matchers, labels)


class DeliveryConfig(_Model):
    """Retry and fallback settings, per receiver."""

    max_retry: Duration = timedelta(hours=24)
    initial_backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=5)
    jitter: Duration = timedelta(seconds=1)
    fallback_receiver: str | None = None


DEFAULT_RECEIVERS: dict[str, Any] = {"console": {"type": "console"}, "jsonl": {"type": "jsonl"}}


class AlertingConfig(_Model):
    """The whole alerting configuration (the ``alerting:`` section of the burnwatch config file)."""

    receivers: dict[str, ReceiverConfig]
    route: RouteConfig
    teams: dict[str, TeamDefaults] = Field(default_factory=dict)
    timing: dict[Severity, TimingOverride] = Field(default_factory=dict)
    update_growth: float = Field(default=0.25, ge=0)
    inhibit_rules: list[InhibitRule] = Field(default_factory=lambda: list(DEFAULT_INHIBIT_RULES))
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    delivery: DeliveryConfig = DeliveryConfig()
    dashboard_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        # No receivers configured: console and JSON lines, so the demo works without accounts.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        receivers = data.get("receivers") or DEFAULT_RECEIVERS
        data["receivers"] = receivers
        route = data.get("route")
        if route is None or (isinstance(route, dict) and not route.get("receivers")):
            names = [
                n for n, r in receivers.items() if not (isinstance(r, dict) and r.get("type") == "runbook")
            ]
            data["route"] = {**(route or {}), "receivers": names}
        return data

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        self.check_references()
        return self

    def check_references(self) -> None:
        """Raise ``ValueError`` naming the field when a route, team or fallback names an unknown receiver."""
        known = set(self.receivers)
        for where, route in _walk(self.route, "route"):
            for name in route.receivers:
                if name not in known:
                    raise ValueError(f"{where}.receivers: unknown receiver {name!r} (known: {sorted(known)})")
        for team, defaults in self.teams.items():
            for name in defaults.receivers:
                if name not in known:
                    raise ValueError(
                        f"teams.{team}.receivers: unknown receiver {name!r} (known: {sorted(known)})"
                    )
        fallback = self.delivery.fallback_receiver
        if fallback is not None and fallback not in known:
            raise ValueError(
                f"delivery.fallback_receiver: unknown receiver {fallback!r} (known: {sorted(known)})"
            )
        if self.route.matchers:
            raise ValueError("route.matchers: the root route takes every alert; put matchers on child routes")

    def timing_for(self, severity: str) -> Timing:
        """Return the default timing for a severity (built-in defaults with ``timing`` applied)."""
        base = DEFAULT_TIMING[severity]
        override = self.timing.get(severity)  # type: ignore[call-overload]  # str key over Literal keys
        return override.over(base) if override else base

    def with_teams(self, teams: Mapping[str, list[str]]) -> AlertingConfig:
        """Return a copy with team default receivers added (for teams the config does not list)."""
        merged = dict(self.teams)
        for team, receivers in teams.items():
            merged.setdefault(team, TeamDefaults(receivers=receivers))
        updated = self.model_copy(update={"teams": merged})
        try:
            updated.check_references()
        except ValueError as error:
            raise AlertingConfigError(f"invalid alerting config at {error}") from None
        return updated

    def effective_route(self) -> RouteConfig:
        """Return the routing tree with one child route per team default, after the explicit routes."""
        team_routes = [
            RouteConfig(
                name=f"team:{team}",
                matchers=[Matcher(name="team", value=team)],
                receivers=defaults.receivers,
                group_by=defaults.group_by,
            )
            for team, defaults in sorted(self.teams.items())
        ]
        return self.route.model_copy(update={"routes": [*self.route.routes, *team_routes]})

    def masked(self) -> dict[str, Any]:
        """Return the config as JSON-ready values with secrets masked (for ``burnwatch config show``)."""
        return self.model_dump(mode="json", by_alias=True)


def _walk(route: RouteConfig, where: str) -> Iterator[tuple[str, RouteConfig]]:
    yield where, route
    for i, child in enumerate(route.routes):
        yield from _walk(child, f"{where}.routes.{i}")


def describe_error(error: ValidationError, source: str | None = None) -> str:
    """Turn a validation error into one line per bad field, with its value unless it may be a secret.

    A value is shown when it is a scalar of a field whose name has none of ``SECRET_WORDS``
    (``alerting.secret_fields``, the worker settings' list too); an error
    about a whole entry (a receiver, a route) names its key path and what is wrong, not the mapping.

    >>> try:
    ...     AlertingConfig.model_validate({"receivers": {"ml": {"type": "console"}},
    ...                                    "route": {"receivers": ["ml"], "continue": "maybe"}})
    ... except ValidationError as error:
    ...     print(describe_error(error, "burnwatch.yaml"))
    invalid alerting config in burnwatch.yaml at route.continue: Input should be a valid boolean, \
unable to interpret input (got 'maybe')
    """
    where = f" in {source}" if source else ""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "alerting"
        message = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        if not (err["type"] == "missing" or isinstance(value, Mapping | list | tuple)
                or may_be_secret(loc)):
            message += f" (got {value!r})"
        lines.append(f"invalid alerting config{where} at {loc}: {message}")
    return "\n".join(lines)


def parse_config(
    data: Mapping[str, Any] | None, *, env: Mapping[str, str] | None = None, source: str | None = None
) -> AlertingConfig:
    """Validate a config mapping; raise ``AlertingConfigError`` naming every bad field.

    >>> parse_config({}).route.receivers
    ['console', 'jsonl']
    >>> parse_config({"receivers": {"pd": {"type": "pagerduty"}}}, env={})
    Traceback (most recent call last):
    ...
    alerting.config.AlertingConfigError: invalid alerting config at receivers.pd.pagerduty: \
routing_key: required; set routing_key_env (an environment variable) or routing_key_file
    """
    context = {"env": env} if env is not None else None
    try:
        return AlertingConfig.model_validate(dict(data or {}), context=context)
    except ValidationError as error:
        raise AlertingConfigError(describe_error(error, source)) from None


def load_config(
    path: Path | str | None, *, env: Mapping[str, str] | None = None, section: str | None = "alerting"
) -> AlertingConfig:
    """Read a YAML file (its ``section`` key, or the whole file with ``section=None``) and validate it."""
    if path is None:
        return parse_config({}, env=env)
    file = Path(path)
    if not file.is_file():
        raise AlertingConfigError(f"alerting config file not found: {file}")
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise AlertingConfigError(f"alerting config {file} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise AlertingConfigError(f"alerting config {file}: expected a mapping at the top")
    data = loaded.get(section, {}) if section else loaded
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlertingConfigError(f"alerting config {file} at {section}: expected a mapping")
    return parse_config(data, env=env, source=str(file))

"""Runbook actions: per alert kind, an HTTP call or a command, with ``$label`` templated parameters.

Guarded five ways: dry-run (the default) only says what it would do; hosts and commands must be on an
allow-list (checked at start-up and again before each run); parameter values must be plain tokens (no
spaces or shell characters, and commands never go through a shell); a rate limit caps runs per
window; an optional approval step asks before anything runs. Every decision is an ``ActionOutcome``,
returned in ``DeliveryResult.data["outcomes"]`` and passed to ``on_outcome`` so the shell can report it
on the alert.
"""

from __future__ import annotations

import json
import re
import subprocess  # noqa: S404 - commands run without a shell, from an allow-list
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from string import Template
from typing import Any, Literal
from urllib.parse import urlsplit

from alerting.config import RunbookActionConfig, RunbookReceiverConfig
from alerting.matchers import alert_labels
from alerting.model import Alert
from alerting.notification import Notification
from alerting.receivers.base import DeliveryResult
from alerting.receivers.http import request

SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@=+,-]{1,256}$")
OutcomeStatus = Literal["dry_run", "executed", "failed", "rate_limited", "not_allowed", "awaiting_approval"]


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """An action about to run, as shown to the approver."""

    id: str
    kind: str
    fingerprint: str
    description: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What happened to one planned action."""

    action_id: str
    kind: str
    fingerprint: str
    status: OutcomeStatus
    detail: str
    at: float = field(default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def params_for(alert: Alert) -> dict[str, str]:
    """Return the template parameters of an alert: its labels plus ``cost_impact_usd``."""
    return {**alert_labels(alert), "cost_impact_usd": f"{alert.cost_impact_usd:.2f}"}


def _fill(template: str, params: Mapping[str, str]) -> str:
    try:
        return Template(template).substitute(params)
    except KeyError as missing:
        raise ValueError(f"template {template!r} needs parameter {missing}") from None
    except ValueError as error:
        raise ValueError(f"bad template {template!r}: {error}") from None


def _fill_json(value: Any, params: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, params)
    if isinstance(value, dict):
        return {k: _fill_json(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, params) for v in value]
    return value


def _identifiers(action: RunbookActionConfig) -> set[str]:
    """Return the ``$names`` an action's templates use."""
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    if action.http is not None:
        collect([action.http.url, action.http.body])
    if action.command is not None:
        collect(action.command.argv)
    return {name for text in texts for name in Template(text).get_identifiers()}


class RunbookReceiver:
    """Run the configured action for each newly firing alert of a notification, at most once per alert."""

    def __init__(
        self,
        name: str,
        config: RunbookReceiverConfig,
        *,
        approver: Callable[[PlannedAction], bool] | None = None,
        on_outcome: Callable[[ActionOutcome], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self.outcomes: list[ActionOutcome] = []
        self._approver = approver
        self._on_outcome = on_outcome
        self._clock = clock
        self._runs: deque[float] = deque()
        self._done: set[str] = set()

    def deliver(self, notification: Notification) -> DeliveryResult:
        """Plan, check and (unless dry-run) run an action per new firing alert; report each outcome."""
        outcomes = []
        if notification.transition != "resolved":
            for alert in notification.firing:
                action = self.config.actions.get(alert.kind)
                if action is None or alert.fingerprint in self._done:
                    continue
                outcome = self._handle(alert, action)
                if outcome.status != "awaiting_approval":
                    self._done.add(alert.fingerprint)
                outcomes.append(outcome)
                self.outcomes.append(outcome)
                if self._on_outcome is not None:
                    self._on_outcome(outcome)
        summary = ", ".join(f"{o.kind}:{o.status}" for o in outcomes) or "no action"
        return DeliveryResult.delivered(detail=summary, outcomes=[o.as_dict() for o in outcomes])

    def _handle(self, alert: Alert, action: RunbookActionConfig) -> ActionOutcome:
        now = self._clock()
        action_id = f"{alert.fingerprint}:{alert.kind}"

        def outcome(status: OutcomeStatus, detail: str) -> ActionOutcome:
            return ActionOutcome(action_id, alert.kind, alert.fingerprint, status, detail, now)

        params = params_for(alert)
        unsafe = sorted(k for k in _identifiers(action) if k in params and not SAFE_VALUE.match(params[k]))
        if unsafe:
            return outcome("not_allowed", f"unsafe value in parameter(s) {', '.join(unsafe)}")
        try:
            description = self._describe(action, params)
        except ValueError as error:
            return outcome("not_allowed", str(error))
        allowed = self._allowed(action, params)
        if allowed:
            return outcome("not_allowed", allowed)
        if self.config.dry_run:
            return outcome("dry_run", f"would run: {description}")
        while self._runs and self._runs[0] <= now - self.config.rate_limit.per.total_seconds():
            self._runs.popleft()
        if len(self._runs) >= self.config.rate_limit.max_runs:
            return outcome(
                "rate_limited",
                f"{self.config.rate_limit.max_runs} runs per "
                f"{self.config.rate_limit.per} reached; skipped: {description}",
            )
        if self.config.approval == "required":
            plan = PlannedAction(action_id, alert.kind, alert.fingerprint, description, params)
            if self._approver is None or not self._approver(plan):
                return outcome("awaiting_approval", f"needs approval: {description}")
        self._runs.append(now)
        return self._run(action, params, outcome)

    @staticmethod
    def _describe(action: RunbookActionConfig, params: Mapping[str, str]) -> str:
        if action.http is not None:
            return f"{action.http.method} {_fill(action.http.url, params)}"
        assert action.command is not None  # noqa: S101 - RunbookActionConfig has exactly one
        return " ".join(_fill(arg, params) for arg in action.command.argv)

    def _allowed(self, action: RunbookActionConfig, params: Mapping[str, str]) -> str:
        """Return why the action is not allowed ('' when it is)."""
        if action.http is not None:
            host = urlsplit(_fill(action.http.url, params)).hostname or ""
            if host not in self.config.allowed_hosts:
                return f"host {host!r} is not in allowed_hosts"
        if action.command is not None and action.command.argv[0] not in self.config.allowed_commands:
            return f"command {action.command.argv[0]!r} is not in allowed_commands"
        return ""

    def _run(
        self,
        action: RunbookActionConfig,
        params: Mapping[str, str],
        outcome: Callable[[OutcomeStatus, str], ActionOutcome],
    ) -> ActionOutcome:
        if action.http is not None:
            http = action.http
            body = json.dumps(_fill_json(http.body, params)).encode() if http.body is not None else None
            headers = {**http.headers, "Content-Type": "application/json"}
            resp = request(http.method, _fill(http.url, params), body, headers, http.timeout_s)
            if 200 <= resp.status < 300:
                return outcome("executed", f"HTTP {resp.status}")
            return outcome("failed", f"HTTP {resp.status} {resp.error}".strip())
        assert action.command is not None  # noqa: S101 - RunbookActionConfig has exactly one
        argv = [_fill(arg, params) for arg in action.command.argv]
        try:
            done = subprocess.run(  # noqa: S603 - no shell, allow-listed program, checked values
                argv,
                capture_output=True,
                text=True,
                timeout=action.command.timeout_s,
                check=False,
                shell=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return outcome("failed", f"{type(error).__name__}: {error}")
        tail = (done.stdout or done.stderr).strip()[-500:]
        status: OutcomeStatus = "executed" if done.returncode == 0 else "failed"
        return outcome(status, f"exit {done.returncode}: {tail}")

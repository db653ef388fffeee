"""Give an alert without an owner the team the allocation mapping names for what it is about.

Budget alerts carry their scope as labels and detector alerts their entity (app, namespace, project,
cluster, model, user, session); the allocation mapping knows who owns those. The notifier routes and
partitions alerts by ``team``, so an alert that arrives without one (or with ``team: unallocated``)
gets it here, through the same ``Allocator`` the pricing worker uses, before it is keyed by team.
"""

from __future__ import annotations

from alerting.model import Alert
from alerting.policy import partition_key
from streams.core.allocation import Allocator
from streams.core.shared_costs import UNALLOCATED

TEAM_SOURCE_LABEL = "team_source"
FROM_ALLOCATION = "allocation"


def with_owner(alert: Alert, allocator: Allocator) -> Alert:
    """Return ``alert`` with a ``team`` label from the allocation when it names no team, else unchanged.

    The team is looked up from the alert's entity and labels (labels win where both name a key); a
    filled team is marked ``team_source: allocation``. Other labels, the entity and the fingerprint
    stay as they were. An alert the mapping knows nothing about is returned as it came.

    >>> from datetime import datetime, timezone
    >>> from streams.core.allocation import AllocationConfig
    >>> allocator = Allocator(AllocationConfig(aliases={"app": ["record.x_App", "app"]},
    ...     lookups=[{"from": "app", "to": "team", "values": {"support-bot": "cx"}}]))
    >>> t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    >>> a = Alert.firing("token_runaway", {"session": "s1"}, severity="warning", summary="runaway",
    ...                  started_at=t, detected_at=t, labels={"app": "support-bot"})
    >>> with_owner(a, allocator).labels
    {'app': 'support-bot', 'team': 'cx', 'team_source': 'allocation'}
    """
    if partition_key(alert) not in ("", UNALLOCATED):
        return alert
    team = allocator.team_for({**alert.entity, **alert.labels})
    if team is None:
        return alert
    labels = {**alert.labels, "team": team, TEAM_SOURCE_LABEL: FROM_ALLOCATION}
    return alert.model_copy(update={"labels": labels})

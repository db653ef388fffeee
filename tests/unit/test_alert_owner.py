"""An alert without a team gets the one the allocation mapping names for what the alert is about."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerting.model import Alert
from alerting.policy import partition_key
from streams.core.alert_owner import with_owner
from streams.core.allocation import AllocationError, Allocator, load_allocation
from streams.notifier_worker import build_notifier
from streams.settings import Settings

T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
DEFAULT = Allocator(load_allocation(None))


def alert(entity: dict[str, str], labels: dict[str, str]) -> Alert:
    return Alert.firing("token_runaway", entity, severity="warning", summary="runaway",
                        started_at=T0, detected_at=T0, labels=labels)


def test_an_app_alert_without_a_team_gets_the_team_of_the_default_mapping() -> None:
    before = alert({"session": "s1"}, {"app": "support-bot", "env": "prod"})
    after = with_owner(before, DEFAULT)
    assert after.labels == {"app": "support-bot", "env": "prod", "team": "cx", "team_source": "allocation"}
    assert partition_key(after) == "cx"
    kept = (after.fingerprint, after.entity, after.summary, after.status)
    assert kept == (before.fingerprint, before.entity, before.summary, before.status)


def test_team_unallocated_is_replaced_and_entity_names_are_looked_up_too() -> None:
    # a budget scoped to an app whose spend had no team; a detector finding on a namespace
    budget = alert({"budget": "b1"}, {"app": "code-assist", "team": "unallocated"})
    assert with_owner(budget, DEFAULT).labels["team"] == "devex"
    namespace = alert({"namespace": "ml-research", "pod": "p1"}, {})
    assert with_owner(namespace, DEFAULT).labels == {"team": "research", "team_source": "allocation"}


def test_an_alert_with_a_team_keeps_it() -> None:
    labelled = alert({"session": "s1"}, {"app": "support-bot", "team": "search"})
    assert with_owner(labelled, DEFAULT) is labelled
    in_entity = alert({"team": "data"}, {"app": "support-bot"})
    assert with_owner(in_entity, DEFAULT) is in_entity


def test_an_alert_naming_nothing_known_stays_unowned() -> None:
    unknown = alert({"session": "s1"}, {"app": "not-in-the-mapping", "project": "ranking"})
    assert with_owner(unknown, DEFAULT) is unknown
    unallocated = alert({"session": "s1"}, {"team": "unallocated"})
    assert with_owner(unallocated, DEFAULT).labels == {"team": "unallocated"}


def test_a_mapping_file_of_ones_own_is_used_and_a_bad_one_stops_the_notifier(tmp_path: Path) -> None:
    mapping = tmp_path / "allocation.yaml"
    mapping.write_text("aliases: {cluster: [record.x_Cluster]}\n"
                       "lookups:\n"
                       "  - {from: project, to: team, values: {ranking: search}}\n"
                       "  - {from: cluster, to: team, values: {gpu-east: research}}\n", encoding="utf-8")
    own = Allocator(load_allocation(mapping))
    assert with_owner(alert({}, {"project": "ranking"}), own).labels["team"] == "search"
    assert with_owner(alert({"cluster": "gpu-east"}, {}), own).labels["team"] == "research"
    mapping.write_text("lookups: [{from: nowhere, to: team, values: {a: b}}]\n", encoding="utf-8")
    with pytest.raises(AllocationError, match="lookups"):
        build_notifier(Settings(data_dir=tmp_path, allocation_path=mapping))

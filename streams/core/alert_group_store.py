"""The notifier's open groups in its state table, saved so that a crash never tears a group.

``save_step`` writes a policy step: the notifications it decided (the outbox) first, then its groups,
all to the one changelog partition of the step's ``alerts.by_team`` partition, so a group restored
as sent always finds its notification in the outbox.

A group is stored as a header (the group without its alerts) plus one entry per alert (a slot), so
an alert joining a 1,000-alert group logs two small entries, not the group. A step's writes for a
group must still land together: a header that says an incident is open beside a slot that never
heard it was sent makes the resolve an empty message, and the reverse loses the resolve.

So every save of a group gives it a new ``version`` and writes, in this order, to the one changelog
partition of its ``alerts.by_team`` partition:

1. the slots it changed, each under a new key ``<group id>|<fingerprint>|<version>`` (an alert that
   left the group gets a marker entry with ``slot: null``);
2. the header, with that version;
3. tombstones for the entries the new ones replaced, then for the markers.

aiokafka keeps one batch in flight per partition, so a crash keeps a prefix of these messages, and
``load_groups`` reads each group as of its header: for each alert, its newest entry at or below the
header's version. Entries above it (a save the crash cut short) or below the live one, and entries of
a group with no header or opened at another time (left while a group of that id closed), are garbage
the caller deletes before anything else is written. The state a crash leaves is therefore each
group as some step left it; the step itself is read again from ``alerts.by_team`` (faust commits an
offset only after flushing the producer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from alerting.notification import Notification
from alerting.policy import Group, PolicyState, Slot, changed_groups


class LoggedTable(Protocol):
    """What ``put`` and ``delete`` use of a faust table: its data and its changelog sends."""

    data: Any

    def send_changelog(self, partition: int | None, key: Any, value: Any, **kwargs: Any) -> Any:
        """Log one change of ``key`` to changelog partition ``partition``."""


def put(table: LoggedTable, partition: int, key: str, value: dict[str, Any]) -> None:
    """Store ``value`` and log it to changelog partition ``partition`` (works outside a message)."""
    table.data[key] = value
    table.send_changelog(partition, key, value)


def delete(table: LoggedTable, partition: int, key: str) -> None:
    """Remove ``key`` and log a tombstone to changelog partition ``partition``."""
    table.data.pop(key, None)
    table.send_changelog(partition, key, None, value_serializer="raw")


def entries(table: LoggedTable, partitions: set[int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield the ``(key, value)`` entries of ``table`` that belong to ``partitions``."""
    for key, value in list(table.data.items()):
        if isinstance(value, dict) and value.get("partition") in partitions:
            yield str(key), value


def slot_key(group_id: str, fingerprint: str, version: int) -> str:
    """Return the table key of one alert of a group as saved at ``version``.

    >>> slot_key("slack|3f2a", "9c1e", 4)
    'slack|3f2a|9c1e|4'
    """
    return f"{group_id}|{fingerprint}|{version}"


@dataclass
class SavedGroup:
    """Where a group stands in the table: its header's version and the version of each alert's entry."""

    version: int = 0
    slots: dict[str, int] = field(default_factory=dict)


# Group id -> what is saved of it, for one partition.
Saved = dict[str, SavedGroup]


def save_step(table: LoggedTable, partition: int, before: PolicyState, after: PolicyState,
              notifications: Sequence[Notification], saved: Saved) -> None:
    """Save one policy step: its notifications in the outbox first, then the groups it changed.

    In one table, so in one changelog partition: a group that a crash restores as sent has its
    notification in the outbox, to be delivered (or skipped by the sent log) after the restart.
    """
    for n in notifications:
        put(table, partition, n.id, {"partition": partition, "notification": n.model_dump(mode="json")})
    save_groups(table, partition, before, after, saved)


def save_groups(table: LoggedTable, partition: int, before: PolicyState, after: PolicyState,
                saved: Saved) -> int:
    """Write what a step changed, in the order the module docstring gives; return the messages logged.

    A step keeps untouched groups and slots as the same objects, so a changed one is one that is not.
    ``saved`` (this partition's) is updated to what the table now holds.
    """
    upserts, dropped = changed_groups(before, after)
    writes = 0
    for gid, group in upserts.items():
        old = before.groups.get(gid)
        writes += _save_group(table, partition, gid, group, old.slots if old is not None else {},
                              saved.setdefault(gid, SavedGroup()))
    for gid in dropped:
        gone = saved.pop(gid, SavedGroup())
        delete(table, partition, gid)
        for fp, version in gone.slots.items():
            delete(table, partition, slot_key(gid, fp, version))
        writes += 1 + len(gone.slots)
    return writes


def _save_group(table: LoggedTable, partition: int, gid: str, group: Group, old_slots: dict[str, Slot],
                saved: SavedGroup) -> int:
    version, opened = saved.version + 1, group.created_at.isoformat()
    changed: list[tuple[str, Slot | None]] = [
        (fp, slot) for fp, slot in group.slots.items() if old_slots.get(fp) is not slot
    ]
    left = sorted(old_slots.keys() - group.slots.keys())
    written = [*changed, *((fp, None) for fp in left)]  # a marker (None) for each alert that left
    replaced = [slot_key(gid, fp, saved.slots[fp]) for fp, _ in written if fp in saved.slots]
    for fp, slot in written:
        put(table, partition, slot_key(gid, fp, version), {
            "partition": partition, "group_id": gid, "opened": opened, "fingerprint": fp, "version": version,
            "slot": slot.model_dump(mode="json") if slot is not None else None,
        })
        saved.slots[fp] = version
    put(table, partition, gid, {
        "partition": partition, "version": version, "group": group.model_dump(mode="json", exclude={"slots"}),
    })
    saved.version = version
    for key in replaced:
        delete(table, partition, key)
    for fp in left:
        delete(table, partition, slot_key(gid, fp, saved.slots.pop(fp)))
    return len(written) + 1 + len(replaced) + len(left)


@dataclass
class Loaded:
    """What ``load_groups`` read: the policy state and saved versions per partition, and the garbage."""

    states: dict[int, PolicyState]
    saved: dict[int, Saved]
    # (key, partition) of entries no header reaches: the caller deletes them.
    garbage: list[tuple[str, int]]


@dataclass
class _Header:
    partition: int
    version: int
    group: Group
    # The newest entry at or below ``version`` of each alert: fingerprint -> (version, key, slot or None).
    live: dict[str, tuple[int, str, dict[str, Any] | None]] = field(default_factory=dict)

    def reaches(self, value: dict[str, Any]) -> bool:
        """Return whether a slot entry belongs to this header: its group as opened then, at or below it."""
        return value["version"] <= self.version and (
            datetime.fromisoformat(value["opened"]) == self.group.created_at
        )


def load_groups(table: LoggedTable, partitions: set[int]) -> Loaded:
    """Rebuild the groups of ``partitions``: each as its header's version says (module docstring)."""
    headers: dict[str, _Header] = {}
    slot_entries: list[tuple[str, dict[str, Any]]] = []
    for key, value in entries(table, partitions):
        if "group" in value:
            headers[key] = _Header(value["partition"], value["version"], Group.model_validate(value["group"]))
        elif "group_id" in value:  # the table holds other entries too (the notifier's outbox)
            slot_entries.append((key, value))
    garbage: list[tuple[str, int]] = []
    for key, value in slot_entries:
        header = headers.get(value["group_id"])
        if header is None or not header.reaches(value):
            garbage.append((key, value["partition"]))
            continue
        current = header.live.get(value["fingerprint"])
        if current is not None and current[0] > value["version"]:
            garbage.append((key, value["partition"]))
            continue
        if current is not None:
            garbage.append((current[1], value["partition"]))
        header.live[value["fingerprint"]] = (value["version"], key, value["slot"])
    states: dict[int, dict[str, Group]] = {p: {} for p in partitions}
    saved: dict[int, Saved] = {p: {} for p in partitions}
    for gid, header in headers.items():
        slots: dict[str, Slot] = {}
        kept = saved[header.partition][gid] = SavedGroup(header.version)
        for fp, (version, key, slot) in header.live.items():
            if slot is None:  # a marker: the alert left the group
                garbage.append((key, header.partition))
                continue
            slots[fp] = Slot.model_validate(slot)
            kept.slots[fp] = version
        states[header.partition][gid] = header.group.model_copy(update={"slots": slots})
    return Loaded({p: PolicyState(groups=g) for p, g in states.items()}, saved, sorted(garbage))

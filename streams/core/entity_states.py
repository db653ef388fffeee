"""One saved document per LLM entity: the states of every detector that steps it, in one table entry.

A session is stepped by three detectors (runaway, agent loop, context bloat) and an app by two
(runaway, model switch), nearly always together. Saved one entry each, a session made three keys to
encode, store and log on nearly every request (the most frequent save by far). ``fuse`` makes one
document of an entity's states; ``split`` gives them back as they were.

>>> session = {"app": "bot", "session": "s1"}
>>> tables = [("runaway", {"app=bot,session=s1": {"e": session, "w": [[4.0, 0.1, 1, 2.0]]}}),
...           ("agent_loop", {"app=bot,session=s1": {"e": session, "req": 1}}), ("context_bloat", {})]
>>> doc = fuse(tables, "app=bot,session=s1")
>>> sorted(doc)
['_v', 'agent_loop', 'runaway']
>>> split(doc)["agent_loop"]
{'e': {'app': 'bot', 'session': 's1'}, 'req': 1}
>>> fuse(tables, "app=bot") is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detectors.deferred import PENDING
from detectors.state import STATE_VERSION, State, StateError, from_dict

LLM_DETECTORS = ("runaway", "agent_loop", "context_bloat", "model_switch")
"""The detectors whose states of one entity share a document (keyed by the entity id)."""
LLM_SECTIONS = (*LLM_DETECTORS, PENDING)
"""What an entity's document may hold: those states, or the buckets of an entity too young to step."""

VERSION = "_v"


def fuse(tables: Sequence[tuple[str, Mapping[str, State]]], key: str) -> dict[str, Any] | None:
    """Return one document of the states ``key`` has in ``tables`` (detector name, states by entity).

    None when it has none left. The states are not copied: the document is to be serialized at once.
    """
    doc: dict[str, Any] | None = None
    for name, states in tables:
        state = states.get(key)
        if state is not None:
            if doc is None:
                doc = {VERSION: STATE_VERSION}
            doc[name] = state
    return doc


def split(doc: Any) -> dict[str, State]:
    """Return the states of a ``fuse`` document by detector name.

    Raises ``StateError`` for a document of another version, one that is not JSON-safe, or one that
    names a detector that keeps no LLM entity state (nor ``pending``, a young entity's buckets).
    """
    states = from_dict(doc)
    states.pop(VERSION, None)
    for name, state in states.items():
        if name not in LLM_SECTIONS or not isinstance(state, dict):
            raise StateError(f"{name!r} is not an LLM detector's state")
    return states

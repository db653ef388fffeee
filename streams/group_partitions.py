"""Which ``detector.inputs`` partition an entity group's inputs go to: Kafka's keyed partitioner, cached.

The router places every group's message itself (``partition=``), with the partition aiokafka's default
partitioner (faust's) gives the group key, murmur2 as Kafka's Java clients: the same partition a keyed
send without one would take, so the placement is the one worker versions before in-place detection
used. Knowing the partition lets the router apply the inputs of partitions its own worker owns in
place (``streams/detector_agents.py``) rather than send them through the topic.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

MAX_CACHED = 100_000  # group keys remembered; past it the cache starts over (a key costs about 4 µs)


class GroupPartitions:
    """The partition of each group key among ``partitions``, computed once per key.

    >>> parts = GroupPartitions(6)
    >>> parts("app:search"), parts("app:search") == parts("app:search"), 0 <= parts("gpu:GPU-1") < 6
    (3, True, True)
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        """Return the partition of group ``key``."""
        partition = self._cache.get(key)
        if partition is None:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            partition = self._cache[key] = (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions
        return partition

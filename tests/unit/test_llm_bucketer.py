"""``LlmBucketer``: flush closes exactly the buckets that ended, in order, whatever is open."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.buckets import LlmBucket, LlmBucketer, LlmUsage
from detectors.config import BucketConfig

CONFIG = BucketConfig(session_s=2, scope_s=10, app_s=60)


def open_buckets(bucketer: LlmBucketer) -> list[LlmBucket]:
    """Every open bucket, read from the bucketer's tables (what a flush used to walk)."""
    latest = [bucket for table in bucketer._tables.values() for bucket in table.values()]
    return latest + list(bucketer._older.values())


usages = st.lists(
    st.tuples(
        st.floats(0, 600, allow_nan=False),  # request time: late ones too
        st.sampled_from(["", "s1", "s2", "s3"]),  # session ("": none)
        st.sampled_from(["", "u1", "u2"]),  # user
        st.sampled_from(["a1", "a2"]),  # app
        st.booleans(),  # flush after it
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(usages)
def test_a_flush_returns_every_ended_bucket_once_in_closing_order(steps) -> None:
    bucketer = LlmBucketer(CONFIG)
    watermark = 0.0
    for time, session, user, app, flush in steps:
        bucketer.add(LlmUsage(time, app, user, session, "m", 10, 2, 0.001, "p"))
        if flush:
            watermark = max(watermark, time - 5.0)
            expected = sorted((b for b in open_buckets(bucketer) if b.end <= watermark),
                              key=lambda b: (b.end, b.scope, b.key))
            closed = bucketer.flush(watermark)
            assert [id(b) for b in closed] == [id(b) for b in expected]
            assert all(b.end > watermark for b in open_buckets(bucketer))
    left = open_buckets(bucketer)
    assert sorted(id(b) for b in bucketer.flush(float("inf"))) == sorted(id(b) for b in left)
    assert open_buckets(bucketer) == [] and bucketer.flush(float("inf")) == []

"""A batch's budget contributions and ledger entries go out in messages the broker takes (under 16 MB)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import to_json

from streams.app import MAX_MESSAGE_BYTES_ON_WIRE
from streams.core.bounded_groups import MAX_ITEMS_PER_MESSAGE, in_parts, part_key
from streams.core.budget_charges import ledger_key
from streams.tables import batch_message, encode_entries


@given(st.lists(st.integers(), max_size=50), st.integers(1, 10))
def test_parts_keep_every_item_in_order_and_under_the_limit(items: list[int], limit: int) -> None:
    parts = in_parts(items, limit)
    assert [item for part in parts for item in part] == items
    assert all(len(part) <= limit for part in parts)
    assert all(parts) or parts == [[]]  # an empty batch is one empty part
    assert len({part_key("k", number) for number in range(len(parts))}) == len(parts)


def test_a_catch_up_batchs_ledger_message_stays_under_the_brokers_limit() -> None:
    # the 200,000-event SIGKILL test's catch-up: 24 budget.charges messages, a 25 MB ledger message
    charge = "sim5-1796193515-gpu-aws-us-west-2-gpu-03-161:gpu0"
    event = charge.split(":")[0]
    contribution = [charge, event, 1796195930000, 0.005908333333333333]
    entries = [(ledger_key("everything-monthly", f"{charge}-{n}"), contribution) for n in range(120_000)]
    assert len(batch_message(encode_entries(entries))) > MAX_MESSAGE_BYTES_ON_WIRE  # what was refused
    parts = in_parts(entries)
    assert len(parts) == 6 and all(len(part) <= MAX_ITEMS_PER_MESSAGE for part in parts)
    assert max(len(batch_message(encode_entries(part))) for part in parts) < MAX_MESSAGE_BYTES_ON_WIRE / 3
    assert max(len(to_json([contribution] * len(part))) for part in parts) < MAX_MESSAGE_BYTES_ON_WIRE / 4

"""The laptop's clock starts after every stamp already in its op log."""

from __future__ import annotations

from pathlib import Path

from conflict.author import make_op
from field_client.store import FieldClient
from schema.stamp import parse


def test_an_edit_after_reopening_sorts_after_ops_that_arrived_by_another_route(tmp_path: Path) -> None:
    fc = FieldClient.init(tmp_path / "d", "password123", node="330102101", user="li")
    cid = fc.new_case({"title": "t", "category": "dispute", "subject": "neighbour", "channel": "visit"})
    state = fc.replica.fold_state("case", cid)
    assert state is not None
    future_ms = parse(state["max"][0]).ms + 300_000  # a device five minutes fast (within the 10-minute window)
    other, _ = make_op(last=None, wall_ms=future_ms, device="zzzzzzzzzzzzzzzz", author="wang",
                       op_id="ab" * 16, entity="case", entity_id=cid, case_id=cid, kind="set",
                       values={"people_count": 4}, base={"people_count": None}, occurred_at="2026-11-22T09:00:00+08:00")
    fc.replica.apply([other])  # arrives without going through the sync agent
    fc.close()
    reopened = FieldClient.open(tmp_path / "d", "password123")
    mine = reopened.edit("case", cid, {"people_count": 5})
    assert mine is not None and mine.stamp > other.stamp
    assert reopened.case_detail(cid)["case"]["people_count"] == 5
    reopened.close()

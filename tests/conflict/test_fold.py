"""The merge rules (conflict/fold.py), one rule per test, with ops made by devices.

Devices (``tests.opgen.Device``) carry their own clock and view: an edit's ``base`` is
what its device had seen, so "concurrent" below means two devices that had not seen each
other's edit, as in the field.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict.fold import EntityFold, conflict_id, fold, sort_key
from schema.ops import Op
from tests.opgen import T0, Device


def fold_case(ops: list[Op]) -> EntityFold:
    return fold("case", ops[0].case_id, ops)


def row_of(ops: list[Op]) -> dict[str, Any]:
    row = fold_case(ops).row()
    assert row is not None
    return row


def open_conflicts(f: EntityFold) -> list[dict[str, Any]]:
    return [c for c in f.conflicts if c["status"] == "open"]


@pytest.fixture
def village() -> Device:
    return Device("village", wall_ms=T0)


@pytest.fixture
def township() -> Device:
    return Device("township", level="township", wall_ms=T0 + 100)


@pytest.fixture
def county() -> Device:
    return Device("county", level="county", wall_ms=T0 + 200)


def shared_case(first: Device, *others: Device) -> Op:
    """A case created by ``first`` and seen by every other device."""
    create = first.create_case()
    for d in others:
        d.observe(create)
    return create


# ---- fields: last writer wins, losers kept ----


def test_a_concurrent_edit_of_one_field_opens_one_conflict_holding_both_ops(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    cid = create.case_id
    mine = village.set(cid, {"title": "宅基地纠纷(村)"})
    theirs = township.set(cid, {"title": "宅基地纠纷(镇)"})
    assert mine.base == theirs.base == {"title": create.stamp}
    f = fold_case([create, mine, theirs])
    [conflict] = f.conflicts
    assert conflict["status"] == "open" and conflict["kind"] == "concurrent_edit"
    assert conflict["field"] == "title"
    assert sorted(conflict["op_ids"]) == sorted([mine.op_id, theirs.op_id])
    by_id = {op.op_id: op for op in (mine, theirs)}
    assert {by_id[i].values["title"] for i in conflict["op_ids"]} == {
        "宅基地纠纷(村)",
        "宅基地纠纷(镇)",
    }
    assert f.row()["open_conflicts"] == 1  # type: ignore[index]


@pytest.mark.parametrize("later", ["village", "township"])
def test_the_higher_stamp_wins_a_concurrent_edit(
    village: Device, township: Device, later: str
) -> None:
    create = shared_case(village, township)
    cid = create.case_id
    wall = {"village": T0 + 50_000, "township": T0 + 40_000}
    if later == "township":
        wall = {"village": T0 + 40_000, "township": T0 + 50_000}
    a = village.set(cid, {"title": "村"}, wall_ms=wall["village"])
    b = township.set(cid, {"title": "镇"}, wall_ms=wall["township"])
    winner = max(a, b, key=sort_key)
    assert (winner is a) == (later == "village")
    f = fold_case([create, a, b])
    assert f.values["title"] == winner.values["title"]
    assert f.win["title"] == [winner.stamp, winner.op_id]
    assert f.row()["title"] == winner.values["title"]  # type: ignore[index]
    assert f.row()["updated_stamp"] == winner.stamp  # type: ignore[index]


def test_a_conflict_id_is_derived_from_the_field_and_the_two_ops(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    a = village.set(create.case_id, {"title": "村"})
    b = township.set(create.case_id, {"title": "镇"})
    first, second = sorted([a, b], key=sort_key)
    [conflict] = fold_case([b, create, a]).conflicts
    assert conflict["id"] == conflict_id("case", create.case_id, "title", first.op_id, second.op_id)
    assert conflict["op_ids"] == [first.op_id, second.op_id]


def test_a_sequential_edit_based_on_the_current_winner_opens_no_conflict(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    first = village.set(create.case_id, {"title": "一改"})
    township.observe(first)
    second = township.set(create.case_id, {"title": "二改"})
    assert second.base == {"title": first.stamp}
    f = fold_case([create, first, second])
    assert f.conflicts == []
    assert f.values["title"] == "二改"


def test_a_concurrent_edit_writing_the_same_value_opens_no_conflict(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    a = village.set(create.case_id, {"people_count": 6})
    b = township.set(create.case_id, {"people_count": 6})
    f = fold_case([create, a, b])
    assert f.conflicts == []
    assert f.values["people_count"] == 6


def test_concurrent_edits_of_different_fields_open_no_conflict(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    a = village.set(create.case_id, {"title": "新标题"})
    b = township.set(create.case_id, {"people_count": 9})
    f = fold_case([create, a, b])
    assert f.conflicts == []
    assert (f.values["title"], f.values["people_count"]) == ("新标题", 9)


def test_an_edit_with_no_base_while_a_value_exists_is_concurrent(village: Device) -> None:
    create = village.create_case()
    blind = village.set(create.case_id, {"title": "盲改"}, base={"title": None})
    [conflict] = fold_case([create, blind]).conflicts
    assert conflict["op_ids"] == [create.op_id, blind.op_id]


def test_an_edit_whose_base_is_newer_than_the_winner_opens_no_conflict(
    village: Device, township: Device
) -> None:
    # township saw an edit this fold has not received: no conflict until it arrives
    create = shared_case(village, township)
    unseen = village.set(create.case_id, {"title": "未到"})
    township.observe(unseen)
    edit = township.set(create.case_id, {"title": "后改"})
    f = fold_case([create, edit])
    assert f.conflicts == []
    assert f.values["title"] == "后改"
    assert fold_case([create, edit, unseen]).conflicts == []


def test_a_third_concurrent_edit_joins_the_open_conflict(
    village: Device, township: Device, county: Device
) -> None:
    create = shared_case(village, township, county)
    edits = [
        village.set(create.case_id, {"title": "村"}),
        township.set(create.case_id, {"title": "镇"}),
        county.set(create.case_id, {"title": "县"}),
    ]
    f = fold_case([create, *edits])
    [conflict] = f.conflicts
    assert sorted(conflict["op_ids"]) == sorted(e.op_id for e in edits)
    assert f.values["title"] == max(edits, key=sort_key).values["title"]


def test_a_losing_value_is_kept_in_the_ops(village: Device, township: Device) -> None:
    create = shared_case(village, township)
    a = village.set(create.case_id, {"title": "村"})
    b = township.set(create.case_id, {"title": "镇"})
    f = fold_case([create, a, b])
    loser = min(a, b, key=sort_key)
    assert f.values["title"] != loser.values["title"]
    assert loser.op_id in f.conflicts[0]["op_ids"]


# ---- resolve ----


def _disputed(village: Device, township: Device, county: Device) -> tuple[list[Op], list[Op]]:
    create = shared_case(village, township, county)
    edits = [
        village.set(create.case_id, {"title": "村"}),
        township.set(create.case_id, {"title": "镇"}),
        county.set(create.case_id, {"title": "县"}),
    ]
    return [create, *edits], edits


def test_a_resolve_naming_every_op_closes_the_conflict_and_sets_the_chosen_value(
    village: Device, township: Device, county: Device
) -> None:
    ops, edits = _disputed(village, township, county)
    county.observe(*edits)
    resolve = county.resolve(ops[0].case_id, [e.op_id for e in edits], field="title", value="村")
    f = fold_case([*ops, resolve])
    [conflict] = f.conflicts
    assert conflict["status"] == "resolved"
    assert conflict["resolved_by"] == resolve.op_id
    assert f.values["title"] == "村"
    assert f.row()["open_conflicts"] == 0  # type: ignore[index]


def test_a_resolve_naming_only_some_ops_leaves_the_conflict_open(
    village: Device, township: Device, county: Device
) -> None:
    ops, edits = _disputed(village, township, county)
    county.observe(*edits)
    resolve = county.resolve(ops[0].case_id, [e.op_id for e in edits[:2]])
    f = fold_case([*ops, resolve])
    [conflict] = f.conflicts
    assert conflict["status"] == "open" and conflict["resolved_by"] is None
    assert f.row()["open_conflicts"] == 1  # type: ignore[index]


def test_a_plain_set_does_not_close_a_conflict(
    village: Device, township: Device, county: Device
) -> None:
    ops, edits = _disputed(village, township, county)
    county.observe(*edits)
    settle = county.set(ops[0].case_id, {"title": "定"})
    f = fold_case([*ops, settle])
    assert f.values["title"] == "定"
    assert [c["status"] for c in f.conflicts] == ["open"]


def test_a_resolve_that_had_not_seen_a_later_edit_conflicts_with_it(
    village: Device, township: Device, county: Device
) -> None:
    ops, edits = _disputed(village, township, county)
    county.observe(*edits)
    resolve = county.resolve(ops[0].case_id, [e.op_id for e in edits], field="title", value="村")
    late = township.set(ops[0].case_id, {"title": "镇再改"}, wall_ms=T0 + 10**6)
    f = fold_case([*ops, resolve, late])
    resolved, reopened = f.conflicts
    assert resolved["status"] == "resolved"
    assert sorted(resolved["op_ids"]) == sorted(e.op_id for e in edits)
    assert (reopened["status"], reopened["op_ids"]) == ("open", [resolve.op_id, late.op_id])
    assert f.values["title"] == "镇再改"


# ---- sets: add wins ----


def test_a_concurrent_add_and_remove_of_one_item_leaves_it_present(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    cid = create.case_id
    first_add = village.add(cid, "tags", ["key"])
    township.observe(first_add)
    remove = township.remove(cid, "tags", ["key"])
    again = village.add(cid, "tags", ["key"])  # village had not seen the remove
    assert remove.values["observed"] == [first_add.op_id]
    for order in ([create, first_add, remove, again], [again, remove, first_add, create]):
        f = fold_case(order)
        assert f.values["tags"] == ["key"]
        assert json.loads(f.row()["tags"]) == ["key"]  # type: ignore[index]


def test_an_add_the_remover_had_not_seen_survives_even_if_it_sorts_first(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    cid = create.case_id
    add = village.add(cid, "tags", ["group"], wall_ms=T0 + 5_000)
    remove = township.remove(cid, "tags", ["group"], observed=[], wall_ms=T0 + 9_000)
    assert sort_key(add) < sort_key(remove)
    assert fold_case([create, add, remove]).values["tags"] == ["group"]


def test_a_remove_with_the_observed_tag_makes_the_item_absent(
    village: Device, township: Device
) -> None:
    create = shared_case(village, township)
    cid = create.case_id
    adds = [village.add(cid, "tags", ["key", "hard"])]
    township.observe(*adds)
    remove = township.remove(cid, "tags", ["key"])
    f = fold_case([create, *adds, remove])
    assert f.values["tags"] == ["hard"]
    assert json.loads(f.row()["tags"]) == ["hard"]  # type: ignore[index]


def test_set_items_given_at_create_become_adds_and_can_be_removed(village: Device) -> None:
    create = village.create_case(tags=["repeat", "group"])
    remove = village.remove(create.case_id, "tags", ["group"])
    assert remove.values["observed"] == [create.op_id]
    assert fold_case([create]).values["tags"] == ["group", "repeat"]
    assert fold_case([create, remove]).values["tags"] == ["repeat"]


# ---- void ----


def test_a_void_keeps_the_row_marked_voided_with_its_reason(village: Device) -> None:
    create = village.create_case()
    void = village.void(create.case_id, "重复登记")
    row = row_of([create, void])
    assert (row["voided"], row["void_reason"]) == (1, "重复登记")
    assert row["title"] == create.values["title"]
    assert row_of([create])["voided"] == 0


def test_the_first_void_in_stamp_order_wins(village: Device, township: Device) -> None:
    create = shared_case(village, township)
    first = village.void(create.case_id, "登记错误", wall_ms=T0 + 5_000)
    second = township.void(create.case_id, "已撤回", wall_ms=T0 + 9_000)
    assert row_of([second, create, first])["void_reason"] == "登记错误"


def test_a_voided_child_entity_keeps_its_row(village: Device) -> None:
    create = village.create_case()
    visit = village.child("visit", create.case_id)
    void = village.void(create.case_id, "录入错误", entity="visit", entity_id=visit.entity_id)
    row = fold("visit", visit.entity_id, [visit, void]).row()
    assert row is not None and row["voided"] == 1 and row["visitor"] == visit.values["visitor"]


def test_a_transition_after_a_void_is_refused_and_kept_as_a_conflict(village: Device) -> None:
    create = village.create_case()
    void = village.void(create.case_id)
    accept = village.transition(create.case_id, "accept")
    f = fold_case([create, void, accept])
    assert f.life["state"] == "registered"  # type: ignore[index]
    [conflict] = f.conflicts
    assert (conflict["kind"], conflict["reason"]) == (
        "invalid_transition",
        "transition.case_voided",
    )
    assert conflict["op_ids"] == [accept.op_id]


def test_a_transition_before_the_void_stands(village: Device) -> None:
    create = village.create_case()
    accept = village.transition(create.case_id, "accept")
    void = village.void(create.case_id)
    f = fold_case([create, accept, void])
    assert f.life["state"] == "accepted" and f.conflicts == []  # type: ignore[index]


# ---- lifecycle ----


def test_a_valid_transition_moves_the_case_and_records_when(village: Device) -> None:
    create = village.create_case()
    accept = village.transition(create.case_id, "accept")
    row = row_of([create, accept])
    assert (row["state"], row["accepted_at"], row["state_since"]) == (
        "accepted",
        accept.occurred_at,
        accept.occurred_at,
    )
    assert (row["level"], row["node"]) == ("village", create.values["node"])


def test_an_invalid_transition_is_kept_as_a_conflict_and_changes_nothing(village: Device) -> None:
    create = village.create_case()
    close = village.transition(create.case_id, "close")
    f = fold_case([create, close])
    assert f.life == fold_case([create]).life
    assert f.life["state"] == "registered"  # type: ignore[index]
    [conflict] = f.conflicts
    assert conflict == {
        "id": conflict_id("case", create.case_id, "transition", close.op_id),
        "field": "state",
        "kind": "invalid_transition",
        "op_ids": [close.op_id],
        "status": "open",
        "resolved_by": None,
        "reason": "transition.not_allowed_from_state",
        "opened_stamp": close.stamp,
    }


def test_a_village_closing_a_case_the_county_escalated_earlier_is_refused(
    village: Device, county: Device
) -> None:
    create = village.create_case()
    cid = create.case_id
    handled = [village.transition(cid, a) for a in ("accept", "start", "decide")]
    county.observe(create, *handled)
    escalate = county.transition(cid, "escalate", to_node="330102", wall_ms=T0 + 60_000)
    early = village.transition(cid, "close", wall_ms=T0 + 30_000)  # for contrast, below
    close = village.transition(cid, "close", wall_ms=T0 + 120_000)  # had not seen the escalate
    assert sort_key(escalate) < sort_key(close)
    f = fold_case([close, escalate, *handled, create])
    assert (f.life["state"], f.life["level"], f.life["node"]) == (  # type: ignore[index]
        "decided",
        "township",
        "330102",
    )
    [conflict] = f.conflicts
    assert (conflict["op_ids"], conflict["reason"]) == ([close.op_id], "transition.level_too_low")
    # had the village closed before the escalation, the close would have stood
    assert sort_key(early) < sort_key(escalate)
    assert fold_case([create, *handled, early, escalate]).life["state"] == "closed"  # type: ignore[index]


def test_a_transition_before_the_create_is_folded_is_refused(village: Device) -> None:
    create = village.create_case()
    accept = village.transition(create.case_id, "accept")
    f = fold("case", create.case_id, [accept])
    assert f.row() is None
    assert f.conflicts[0]["reason"] == "transition.case_not_created"


# ---- the row ----


def test_there_is_no_row_until_a_create_is_folded(village: Device) -> None:
    create = village.create_case()
    edit = village.set(create.case_id, {"title": "x"})
    assert fold_case([edit]).row() is None
    assert fold_case([edit, create]).row() is not None


def test_the_row_stores_booleans_as_integers_and_keeps_lifecycle_columns(village: Device) -> None:
    create = village.create_case(simplified=True, not_public=False, people_count=3)
    row = row_of([create])
    assert (row["simplified"], row["not_public"], row["people_count"]) == (1, 0, 3)
    assert row["created_stamp"] == row["updated_stamp"] == create.stamp
    assert row["case_id"] == row["id"] == create.case_id
    assert "level" in row and row["extra"] is None
    assert json.loads(row["fold"]) == fold_case([create]).to_state()


def test_a_field_from_a_newer_schema_is_kept_in_extra(village: Device) -> None:
    create = village.create_case()
    newer = dataclasses.replace(
        village.set(create.case_id, {"title": "x"}),
        values={"grid_cell": "G-9"},
        base={"grid_cell": None},
        schema_version=2,
    )
    row = row_of([create, newer])
    assert json.loads(row["extra"]) == {"grid_cell": "G-9"}


def test_an_op_kind_from_a_newer_schema_is_skipped(village: Device) -> None:
    create = village.create_case()
    future = village.op(
        entity="case",
        entity_id=create.case_id,
        case_id=create.case_id,
        kind="merge_cases",
        values={"into": "x"},
    )
    with_future = row_of([create, future])
    without = row_of([create])
    assert with_future["updated_stamp"] == future.stamp
    drop = ("fold", "updated_stamp")
    assert {k: v for k, v in with_future.items() if k not in drop} == {
        k: v for k, v in without.items() if k not in drop
    }


# ---- order ----


def test_folding_out_of_stamp_order_is_refused(village: Device) -> None:
    create = village.create_case()
    edit = village.set(create.case_id, {"title": "x"})
    f = EntityFold("case", create.case_id)
    f.apply(edit)
    with pytest.raises(ValueError):
        f.apply(create)


def _busy_case() -> list[Op]:
    """One case worked on by three devices: conflicts, sets, transitions, a void."""
    v, t, c = (
        Device("village"),
        Device("township", level="township"),
        Device("county", level="county"),
    )
    create = shared_case(v, t, c)
    cid = create.case_id
    ops = [create]
    ops += [v.set(cid, {"title": "村"}), t.set(cid, {"title": "镇"}), c.set(cid, {"title": "县"})]
    ops += [v.set(cid, {"people_count": 4}), t.set(cid, {"people_count": 4})]
    ops += [v.add(cid, "tags", ["key"]), t.add(cid, "tags", ["group"])]
    c.observe(*ops)
    ops += [c.remove(cid, "tags", ["key"]), v.add(cid, "tags", ["key"])]
    ops += [v.transition(cid, "accept"), c.transition(cid, "escalate"), v.transition(cid, "start")]
    ops += [c.resolve(cid, [o.op_id for o in ops[1:4]], field="title", value="村")]
    ops += [t.set(cid, {"summary": "反映宅基地边界"}), v.transition(cid, "close")]
    ops += [t.void(cid, "重复"), c.transition(cid, "start")]
    return ops


def test_a_busy_case_has_conflicts_of_both_kinds() -> None:
    f = fold_case(_busy_case())
    kinds = {(c["kind"], c["status"]) for c in f.conflicts}
    assert ("concurrent_edit", "resolved") in kinds
    assert ("invalid_transition", "open") in kinds
    assert f.values["tags"] == ["group", "key"]


@given(st.randoms(use_true_random=False))
def test_the_fold_does_not_depend_on_the_order_ops_come_in(rnd: random.Random) -> None:
    ops = _busy_case()
    shuffled = ops[:]
    rnd.shuffle(shuffled)
    a, b = fold_case(ops), fold_case(shuffled)
    assert a.row() == b.row()
    assert a.conflict_rows() == b.conflict_rows()


@given(st.integers(min_value=1, max_value=17))
def test_resuming_from_a_stored_state_gives_the_same_result_as_folding_everything(
    split: int,
) -> None:
    ops = sorted(_busy_case(), key=sort_key)
    head = fold_case(ops[:split])
    state = json.loads(json.dumps(head.to_state()))  # as the replica stores it
    resumed = EntityFold.from_state("case", ops[0].case_id, state)
    for op in ops[split:]:
        assert resumed.can_append(op)
        resumed.apply(op)
    whole = fold_case(ops)
    assert resumed.row() == whole.row()
    assert resumed.conflict_rows() == whole.conflict_rows()


def test_a_case_state_stored_before_decided_level_is_folded_again() -> None:
    ops = sorted(_busy_case(), key=sort_key)
    state = json.loads(json.dumps(fold_case(ops[:3]).to_state()))
    del state["life"]["decided_level"]  # as a replica stored it before the lifecycle kept it
    resumed = EntityFold.from_state("case", ops[0].case_id, state)
    assert not resumed.can_append(ops[3])

"""The SQLite replica (conflict/replica.py): idempotent apply, local refolds, rebuild, refusals.

Every replica lives in ``tmp_path``.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conflict.digest import op_digest
from conflict.errors import ReplicaDamaged, ReplicaError
from conflict.fold import fold, sort_key
from conflict.replica import TABLE_COLUMNS, Replica
from schema.errors import OpsRejected
from schema.ops import Op
from tests.opgen import T0, Device


@pytest.fixture
def replica(tmp_path: Path) -> Any:
    r = Replica(tmp_path / "replica.db")
    yield r
    r.close()


def casework() -> tuple[list[Op], Op, Op]:
    """Two cases, children, a concurrent edit, tags, transitions and a void: (ops, case a, case b)."""
    v, t = Device("village"), Device("township", level="township", wall_ms=T0 + 7)
    a = v.create_case(tags=["repeat"])
    b = v.create_case(case_no="V2025-002", title="拖欠工资")
    t.observe(a, b)
    ops = [a, b]
    ops += [v.child("party", a.case_id, {"phone": "13800138000"}), v.child("visit", a.case_id)]
    ops += [v.set(a.case_id, {"title": "村改"}), t.set(a.case_id, {"title": "镇改"})]
    ops += [v.add(a.case_id, "tags", ["key"]), v.transition(a.case_id, "accept")]
    ops += [v.transition(b.case_id, "close"), t.void(b.case_id, "重复登记", wall_ms=T0 + 60_000)]
    ops += [v.child("note", b.case_id)]
    return ops, a, b


def state_of(r: Replica) -> tuple[Any, int, str]:
    return r.snapshot(), r.op_count(), r.digest()


def row_by_id(r: Replica, table: str, entity_id: str) -> tuple[Any, ...]:
    [row] = [row for row in r.snapshot()[table] if row[0] == entity_id]
    return row


# ---- applying ----


def test_apply_reports_what_it_did(replica: Replica) -> None:
    ops, a, b = casework()
    result = replica.apply(ops)
    assert result.applied == [op.op_id for op in ops]
    assert result.duplicates == 0 and result.refolded == 0
    assert result.cases == {a.case_id, b.case_id}
    assert result.entities == {op.entity_key for op in ops}
    assert len(result.conflicts_opened) == 2  # the title edit and the close from registered
    assert {c["id"] for c in replica.conflicts(status="open")} == set(result.conflicts_opened)
    assert replica.op_count() == len(ops)


def test_the_rows_are_the_fold_of_the_log(replica: Replica) -> None:
    ops, a, b = casework()
    replica.apply(ops)
    case_a = replica.get("case", a.case_id)
    assert case_a is not None
    assert (
        case_a["title"]
        == fold("case", a.case_id, [o for o in ops if o.entity_id == a.case_id]).values["title"]
    )
    assert case_a["tags"] == ["key", "repeat"]
    assert (case_a["state"], case_a["open_conflicts"]) == ("accepted", 1)
    case_b = replica.get("case", b.case_id)
    assert case_b is not None
    assert (case_b["voided"], case_b["void_reason"], case_b["state"]) == (
        1,
        "重复登记",
        "registered",
    )
    assert [c["reason"] for c in replica.conflicts(case_id=b.case_id)] == [
        "transition.not_allowed_from_state"
    ]


def test_applying_the_same_ops_twice_changes_nothing(replica: Replica) -> None:
    ops, _, _ = casework()
    replica.apply(ops)
    before = state_of(replica)
    result = replica.apply(ops)
    assert (result.applied, result.duplicates) == ([], len(ops))
    assert state_of(replica) == before


def test_a_repeat_within_one_batch_is_counted_and_stored_once(replica: Replica) -> None:
    ops, _, _ = casework()
    result = replica.apply([*ops, ops[3], ops[0]])
    assert result.duplicates == 2
    assert replica.op_count() == len(ops)


def test_a_repeat_of_part_of_the_log_mixed_with_new_ops_applies_only_the_new(
    replica: Replica,
) -> None:
    ops, _, _ = casework()
    replica.apply(ops[:6])
    result = replica.apply(list(reversed(ops)))
    assert result.duplicates == 6
    assert sorted(result.applied) == sorted(op.op_id for op in ops[6:])
    assert replica.verify_rebuild() == []


def test_ops_come_back_in_arrival_order_unchanged(replica: Replica) -> None:
    ops, a, _ = casework()
    replica.apply(ops[5:])
    replica.apply(ops[:5])
    listed = replica.ops()
    assert [op for _, op in listed] == ops[5:] + ops[:5]
    assert [seq for seq, _ in listed] == sorted(seq for seq, _ in listed)
    assert [op for _, op in replica.ops(after_seq=listed[2][0], limit=3)] == ops[8:11]
    assert replica.ops_for_case(a.case_id) == sorted(
        (o for o in ops if o.case_id == a.case_id), key=sort_key
    )


def test_the_digest_is_over_op_ids_and_stamps_whatever_the_arrival_order(tmp_path: Path) -> None:
    ops, _, _ = casework()
    with Replica(tmp_path / "one.db") as one, Replica(tmp_path / "two.db") as two:
        one.apply(ops)
        shuffled = ops[:]
        random.Random(5).shuffle(shuffled)
        for op in shuffled:
            two.apply([op])
        assert one.digest() == two.digest() == op_digest((o.op_id, o.stamp) for o in ops)
        assert one.digest().startswith(f"{len(ops)}:")
        assert one.snapshot() == two.snapshot()


# ---- late ops refold only their entity ----


def test_a_late_op_refolds_only_its_own_entity(replica: Replica) -> None:
    ops, a, b = casework()
    replica.apply(ops)
    before = replica.snapshot()
    late_device = Device("latecomer", wall_ms=T0)
    late_device.observe(a)
    late = late_device.set(a.case_id, {"people_count": 12}, wall_ms=a_stamp_ms(a) + 1)
    assert sort_key(late) < max(sort_key(o) for o in ops if o.entity_id == a.case_id)

    result = replica.apply([late])

    assert result.refolded == 1
    assert result.entities == {("case", a.case_id)}
    after = replica.snapshot()
    [b_before] = [r for r in before["cases"] if r[0] == b.case_id]
    assert row_by_id(replica, "cases", b.case_id) == b_before
    for table in TABLE_COLUMNS:
        if table != "cases":
            assert after[table] == before[table], table
    row_a = replica.get("case", a.case_id)
    assert row_a is not None and row_a["people_count"] == 12
    expected = fold("case", a.case_id, [o for o in ops if o.entity_id == a.case_id] + [late]).row()
    assert expected is not None
    assert row_by_id(replica, "cases", a.case_id) == tuple(
        expected[c] for c in TABLE_COLUMNS["cases"]
    )
    assert replica.verify_rebuild() == []


def a_stamp_ms(op: Op) -> int:
    return int(op.stamp[:18])


def test_an_op_that_sorts_after_everything_is_folded_without_a_refold(replica: Replica) -> None:
    ops, a, _ = casework()
    replica.apply(ops)
    later = Device("later", wall_ms=T0 + 10**7)
    later.observe(*ops)
    result = replica.apply([later.set(a.case_id, {"people_count": 2})])
    assert result.refolded == 0
    assert replica.verify_rebuild() == []


def test_a_late_op_that_reorders_a_conflict_gives_what_in_order_arrival_gives(
    tmp_path: Path,
) -> None:
    ops, a, _ = casework()
    late_device = Device("latecomer", wall_ms=T0)
    late_device.observe(a)
    late = late_device.set(a.case_id, {"title": "迟到的修改"}, wall_ms=a_stamp_ms(a) + 1)
    with Replica(tmp_path / "late.db") as r_late, Replica(tmp_path / "order.db") as r_order:
        r_late.apply(ops)
        r_late.apply([late])
        in_order: list[Op] = sorted([*ops, late], key=sort_key)
        r_order.apply(in_order)
        assert r_late.snapshot() == r_order.snapshot()


def test_an_op_arriving_before_its_create_makes_no_row_until_the_create_comes(
    replica: Replica,
) -> None:
    v = Device("village")
    case = v.create_case()
    visit = v.child("visit", case.case_id)
    edit = v.set(case.case_id, {"place": "村委会"}, entity="visit", entity_id=visit.entity_id)
    replica.apply([case, edit])
    assert replica.get("visit", visit.entity_id) is None
    result = replica.apply([visit])
    assert result.refolded == 1
    row = replica.get("visit", visit.entity_id)
    assert row is not None and row["place"] == "村委会"


# ---- rebuild and verify ----


def test_rebuild_gives_an_identical_snapshot(replica: Replica) -> None:
    ops, _, _ = casework()
    shuffled = ops[:]
    random.Random(11).shuffle(shuffled)
    for i in range(0, len(shuffled), 3):  # arrive out of order, in small batches
        replica.apply(shuffled[i : i + 3])
    before = replica.snapshot()
    assert any(before["conflicts"])
    replica.rebuild()
    assert replica.snapshot() == before
    assert repr(replica.snapshot()) == repr(before)


def test_verify_rebuild_finds_nothing_on_a_healthy_replica(replica: Replica) -> None:
    replica.apply(casework()[0])
    assert replica.verify_rebuild() == []


def test_verify_rebuild_names_a_row_changed_behind_its_back(replica: Replica) -> None:
    ops, a, _ = casework()
    replica.apply(ops)
    replica.conn.execute("UPDATE cases SET title='篡改' WHERE id=?", (a.case_id,))
    assert replica.verify_rebuild() == [f"cases/{a.case_id}: differs"]
    replica.rebuild()
    assert replica.verify_rebuild() == []
    assert replica.get("case", a.case_id)["title"] != "篡改"  # type: ignore[index]


def test_verify_rebuild_names_a_missing_and_an_extra_row(replica: Replica) -> None:
    ops, a, _ = casework()
    replica.apply(ops)
    visit = next(o for o in ops if o.entity == "visit")
    [conflict_id] = [c["id"] for c in replica.conflicts(case_id=a.case_id)]
    replica.conn.execute("DELETE FROM visits WHERE id=?", (visit.entity_id,))
    replica.conn.execute("DELETE FROM conflicts WHERE id=?", (conflict_id,))
    replica.conn.execute("INSERT INTO notes (id, case_id) VALUES ('stray', ?)", (a.case_id,))
    assert sorted(replica.verify_rebuild()) == sorted(
        [
            f"visits/{visit.entity_id}: missing",
            f"conflicts/{conflict_id}: missing",
            "notes/stray: extra",
        ]
    )


# ---- the file ----


def test_a_damaged_database_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    junk = random.Random(3).randbytes(8192)
    path.write_bytes(junk)
    with pytest.raises(ReplicaDamaged) as info:
        Replica(path)
    assert info.value.code == "replica.damaged"
    assert info.value.details["path"] == str(path)
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replica.db"]


def test_a_replica_whose_pages_are_damaged_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    with Replica(path) as r:
        r.apply(casework()[0])
        r.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[100:4096] = random.Random(1).randbytes(4096 - 100)  # the schema page
    path.write_bytes(bytes(data))
    (tmp_path / "replica.db-wal").unlink(missing_ok=True)
    with pytest.raises(ReplicaDamaged) as info:
        Replica(path)
    assert info.value.code == "replica.damaged"
    assert path.read_bytes() == bytes(data)


def test_a_database_of_another_program_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO accounts (name) VALUES ('wang')")
    conn.commit()
    conn.close()
    original = path.read_bytes()
    with pytest.raises(ReplicaDamaged) as info:
        Replica(path)
    assert info.value.code == "replica.damaged"
    assert info.value.details["tables"] == ["accounts"]
    assert path.read_bytes() == original
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_database_of_another_program_with_a_meta_table_is_refused_as_not_a_replica(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (name TEXT, val TEXT)")
    conn.commit()
    conn.close()
    original = path.read_bytes()
    with pytest.raises(ReplicaError) as info:
        Replica(path)
    assert path.read_bytes() == original
    assert info.value.code == "replica.damaged"


def test_a_replica_of_another_format_is_refused_and_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    with Replica(path) as r:
        r.conn.execute("UPDATE meta SET value='99' WHERE key='replica_format'")
        r.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    original = path.read_bytes()
    with pytest.raises(ReplicaDamaged):
        Replica(path)
    assert path.read_bytes() == original


def test_opening_a_missing_replica_without_create_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError) as info:
        Replica(tmp_path / "absent.db", create=False)
    assert info.value.code == "replica.missing"
    assert not (tmp_path / "absent.db").exists()


def test_a_replica_reopened_holds_what_was_applied(tmp_path: Path) -> None:
    ops, _, _ = casework()
    with Replica(tmp_path / "r.db") as r:
        r.apply(ops)
        before = state_of(r)
    with Replica(tmp_path / "r.db", create=False) as again:
        assert state_of(again) == before


def test_the_replica_uses_wal_and_full_sync(replica: Replica) -> None:
    assert replica.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert replica.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(replica.path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal", "WAL is persistent"
    other.close()


def test_the_sync_level_can_be_lowered_for_tests_and_benchmarks(tmp_path: Path) -> None:
    with Replica(tmp_path / "r.db", synchronous="OFF") as r:
        assert r.conn.execute("PRAGMA synchronous").fetchone()[0] == 0


def test_a_rejected_batch_leaves_no_transaction_open(replica: Replica) -> None:
    ops, _, _ = casework()
    replica.apply(ops[:2])
    with pytest.raises(OpsRejected):
        replica.apply([ops[2], {"op_id": "nonsense"}])
    assert not replica.conn.in_transaction
    replica.apply(ops[2:])
    assert replica.op_count() == len(ops)
    assert os.path.exists(replica.path + "-wal")


def test_a_replica_from_before_decided_level_folds_its_cases_again_once_when_opened(tmp_path: Path) -> None:
    """An upgraded replica whose stored case states lack ``decided_level`` would differ from a
    rebuild (``audit verify`` would call it tampered) until each case's next op; opening it
    folds those cases again, once."""
    import json

    from conflict.replica import CASE_FOLDS
    from tests.casebuild import CaseBuilder

    b = CaseBuilder(level="village")
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-03T10:00:00+08:00")
    b.transition("decide", "2026-03-04T10:00:00+08:00")
    path = tmp_path / "old.db"
    r = Replica(path)
    r.apply(b.ops)
    r.conn.execute("BEGIN")
    fold_text = r.conn.execute("SELECT fold FROM cases WHERE id=?", (b.case_id,)).fetchone()[0]
    state = json.loads(fold_text)
    assert state["life"]["decided_level"] == "village"
    del state["life"]["decided_level"]  # as the older program stored it
    r.conn.execute("UPDATE cases SET fold=? WHERE id=?", (json.dumps(state), b.case_id))
    r.conn.execute("DELETE FROM meta WHERE key='case_folds'")
    r.conn.execute("COMMIT")
    assert r.verify_rebuild()  # the stored row is not what folding its ops gives
    r.close()

    r = Replica(path)
    try:
        assert r.verify_rebuild() == []
        again = json.loads(r.conn.execute("SELECT fold FROM cases WHERE id=?", (b.case_id,)).fetchone()[0])
        assert again["life"]["decided_level"] == "village"
        assert r.conn.execute("SELECT value FROM meta WHERE key='case_folds'").fetchone()[0] == CASE_FOLDS
    finally:
        r.close()

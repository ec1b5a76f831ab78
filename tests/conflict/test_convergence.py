"""Convergence, in the manner of cr-sqlite's property tests.

2-5 replicas, each on its own SQLite file and each the laptop of one device, make random
ops (creates, field edits including concurrent ones, valid and invalid transitions,
voids, set adds/removes, conflict resolutions), exchange random partial subsets of their
ops in random order with duplicates and random batch splits, then do a full exchange.
Afterwards every replica must have identical tables, identical conflict records,
identical digests, and every op (so every value) any replica ever wrote must be in every
op log unchanged.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from conflict.author import make_op
from conflict.hlc import Stamp, receive
from conflict.replica import Replica
from schema.enums import Action, CaseTag, Level, Subject
from schema.ops import Op
from schema.stamp import parse

T0 = 1_763_787_000_000
LEVELS = [lvl.value for lvl in Level]
ACTIONS = [a.value for a in Action]
SUBJECTS = [s.value for s in Subject]
TAGS = [t.value for t in CaseTag]
TITLES = ["宅基地纠纷", "拖欠工资", "邻里漏水", "土地承包", "噪音扰民"]


class Device:
    """One laptop: a replica, an HLC and a skewed wall clock."""

    def __init__(self, index: int, path: Path, skew_ms: int) -> None:
        self.node = f"dev{index:013d}"
        self.replica = Replica(path, synchronous="OFF")
        self.last: Stamp | None = None
        self.skew = skew_ms
        self.written: list[Op] = []

    def emit(self, rnd: random.Random, now: int, **kw: object) -> Op:
        op, self.last = make_op(
            last=self.last,
            wall_ms=now + self.skew,
            device=self.node,
            author=f"user{self.node[-1]}",
            op_id=f"{rnd.getrandbits(128):032x}",
            occurred_at="2026-11-22T09:00:00+08:00",
            **kw,  # type: ignore[arg-type]
        )
        self.replica.apply([op])
        self.written.append(op)
        return op

    def observe(self, ops: list[Op], now: int) -> None:
        for op in ops:
            self.last, _ = receive(self.last, parse(op.stamp), now + self.skew, self.node)

    def ids(self, table: str) -> list[str]:
        return [r[0] for r in self.replica.conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def case_values(rnd: random.Random, node: str) -> dict[str, object]:
    return {
        "case_no": f"V{rnd.randint(1, 999):03d}",
        "title": rnd.choice(TITLES),
        "category": rnd.choice(["dispute", "complaint", "suggestion", "accusation"]),
        "subject": rnd.choice(SUBJECTS),
        "channel": "visit",
        "origin_node": node,
        "received_at": "2026-11-22T09:00:00+08:00",
        "first_receiver": "wang",
        "level": "village",
        "node": node,
        "tags": rnd.sample(TAGS, rnd.randint(0, 2)),
    }


def random_action(dev: Device, rnd: random.Random, now: int) -> None:
    cases = dev.ids("cases")
    choice = rnd.random()
    if not cases or choice < 0.05:
        cid = f"{rnd.getrandbits(128):032x}"
        dev.emit(
            rnd, now, entity="case", entity_id=cid, case_id=cid, kind="create",
            values=case_values(rnd, "330102001"),
        )
        return
    cid = rnd.choice(cases)
    state = dev.replica.fold_state("case", cid)
    assert state is not None
    if choice < 0.45:  # field edit, base = what this laptop sees: concurrency arises naturally
        field = rnd.choice(["title", "subject", "people_count", "simplified"])
        value: object = {
            "title": rnd.choice(TITLES),
            "subject": rnd.choice(SUBJECTS),
            "people_count": rnd.randint(1, 7),
            "simplified": rnd.random() < 0.5,
        }[field]
        seen = state["win"].get(field)
        dev.emit(
            rnd, now, entity="case", entity_id=cid, case_id=cid, kind="set",
            values={field: value}, base={field: seen[0] if seen else None},
        )
    elif choice < 0.62:  # transitions, valid and invalid
        action = rnd.choice(ACTIONS)
        values: dict[str, object] = {"action": action, "acting_level": rnd.choice(LEVELS)}
        if action in ("escalate", "route"):
            values["to_node"] = rnd.choice(["330102", "3301"])
        if action.startswith("decide"):
            values["decision"] = rnd.choice(["support", "explain", "not_support"])
        if action == "extend":
            values["days"] = rnd.randint(1, 30)
        dev.emit(rnd, now, entity="case", entity_id=cid, case_id=cid, kind="transition", values=values)
    elif choice < 0.72:  # append a child entity
        eid = f"{rnd.getrandbits(128):032x}"
        if rnd.random() < 0.5:
            dev.emit(
                rnd, now, entity="visit", entity_id=eid, case_id=cid, kind="create",
                values={"kind": "home", "visited_at": "2026-11-22T10:00:00+08:00", "visitor": "li"},
            )
        else:
            dev.emit(
                rnd, now, entity="note", entity_id=eid, case_id=cid, kind="create",
                values={"text": "回访记录", "written_at": "2026-11-22T10:00:00+08:00"},
            )
    elif choice < 0.82:  # add or remove tags (remove observes what this laptop sees)
        tags = state["tags"].get("tags", {})
        dead = state["dead"].get("tags", {})
        live = {i: [t for t in ts if t not in dead.get(i, [])] for i, ts in tags.items()}
        live = {i: ts for i, ts in live.items() if ts}
        if live and rnd.random() < 0.5:
            item = rnd.choice(sorted(live))
            dev.emit(
                rnd, now, entity="case", entity_id=cid, case_id=cid, kind="remove",
                values={"field": "tags", "items": [item], "observed": live[item]},
            )
        else:
            dev.emit(
                rnd, now, entity="case", entity_id=cid, case_id=cid, kind="add",
                values={"field": "tags", "items": [rnd.choice(TAGS)]},
            )
    elif choice < 0.95:  # resolve an open conflict, in full or in part
        open_ = [c for c in state["conflicts"] if c["status"] == "open"]
        if not open_:
            return
        c = rnd.choice(open_)
        named = c["op_ids"] if rnd.random() < 0.8 else c["op_ids"][:1]
        values = {"resolves": list(named)}
        base = {}
        if c["kind"] == "concurrent_edit" and rnd.random() < 0.7:
            values["field"] = c["field"]
            values["value"] = state["values"][c["field"]]
            base = {c["field"]: state["win"][c["field"]][0]}
        dev.emit(
            rnd, now, entity="case", entity_id=cid, case_id=cid, kind="resolve",
            values=values, base=base,
        )
    else:  # void a case or one of its children
        dev.emit(
            rnd, now, entity="case", entity_id=cid, case_id=cid, kind="void",
            values={"reason": "登记错误"},
        )


def exchange(src: Device, dst: Device, rnd: random.Random, now: int, fraction: float) -> None:
    """Send a random subset of src's op log to dst, shuffled, in random batches, with repeats."""
    ops = [op for _, op in src.replica.ops()]
    chosen = [op for op in ops if rnd.random() < fraction]
    chosen += rnd.sample(chosen, min(len(chosen), rnd.randint(0, 3)))  # duplicates
    rnd.shuffle(chosen)
    while chosen:
        k = rnd.randint(1, 6)
        batch, chosen = chosen[:k], chosen[k:]
        dst.replica.apply(batch)
        dst.observe(batch, now)


@settings(max_examples=200, deadline=None)
@given(
    n_devices=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    steps=st.integers(min_value=5, max_value=60),
    skews=st.lists(st.integers(min_value=-5_000, max_value=5_000), min_size=5, max_size=5),
)
def test_replicas_converge_after_random_partial_exchanges(
    n_devices: int, seed: int, steps: int, skews: list[int]
) -> None:
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        devices = [Device(i, Path(tmp) / f"r{i}.db", skews[i]) for i in range(n_devices)]
        now = T0
        # a few cases known to everyone first, so that laptops work on the same cases
        for _ in range(rnd.randint(1, 3)):
            random_action(devices[0], rnd, now)
        for dst in devices[1:]:
            exchange(devices[0], dst, rnd, now, 1.0)
        for _ in range(steps):
            now += rnd.choice([0, 1, 5, 300])
            if rnd.random() < 0.25:
                src, dst = rnd.sample(devices, 2)
                exchange(src, dst, rnd, now, rnd.random())
            else:
                random_action(rnd.choice(devices), rnd, now)
        # full exchange, every pair, in random order
        for dst in rnd.sample(devices, len(devices)):
            for src in devices:
                if src is not dst:
                    exchange(src, dst, rnd, now, 1.0)

        written = {op.op_id: op for d in devices for op in d.written}
        reference = devices[0].replica
        ref_snapshot = reference.snapshot()
        ref_digest = reference.digest()
        for d in devices:
            log = {op.op_id: op for _, op in d.replica.ops()}
            assert log == written, "every op ever written is in every op log, unchanged"
            assert d.replica.digest() == ref_digest
            assert d.replica.snapshot() == ref_snapshot
            assert d.replica.conflicts() == reference.conflicts()
        assert reference.verify_rebuild() == []
        conflicts = reference.conflicts()
        for kind in ("concurrent_edit", "invalid_transition"):
            n = sum(1 for c in conflicts if c["kind"] == kind)
            event(f"{kind}: {'none' if n == 0 else 'some'}")
        event(f"resolved: {'some' if any(c['status'] == 'resolved' for c in conflicts) else 'none'}")
        for d in devices:
            d.replica.close()


def test_convergence_harness_detects_a_divergent_replica(tmp_path: Path) -> None:
    """The comparison used above fails when one replica misses an op: it can fail."""
    rnd = random.Random(7)
    a = Device(0, tmp_path / "a.db", 0)
    b = Device(1, tmp_path / "b.db", 0)
    for _ in range(10):
        random_action(a, rnd, T0)
    ops = [op for _, op in a.replica.ops()]
    b.replica.apply(ops[:-1])
    assert b.replica.digest() != a.replica.digest()
    assert b.replica.snapshot() != a.replica.snapshot()

"""The plain-Python fast check of op values never accepts what marshmallow would refuse."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from schema.entities import ENTITIES
from schema.enums import OpKind
from schema.validation import SEALED_PREFIX, plainly_valid, values_schema

TZ = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])
DATETIMES = st.datetimes(timezones=TZ).map(lambda d: d.isoformat())
TRICKY = st.sampled_from([
    "", " ", "2026-11-22", "2026-11-22T09:00", "2026-11-22T09:00:00", "2026-11-22T09:00:00Z",
    "2026-02-30", "2026-11-22T25:00:00+08:00", "20261122", "11010519491231002X", "11010519491231002x",
    "110105194912310021", "13812345678", "0571-12345678", "１３８１２３４５６７８", "13812345678\n",
    SEALED_PREFIX + "abc", "a" * 201, "0" * 32, "f" * 31, True, False, 0, 1, -1, 100001, 3.0, None, [], ["x"],
    ["key", "hard"], ["nope"], {"a": 1}, "dispute", "neighbour", "village", "home", "agreement",
])
VALUES = st.one_of(TRICKY, st.text(max_size=30), st.integers(), DATETIMES, st.dates().map(str),
                   st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=400, deadline=None)
@given(
    entity=st.sampled_from(sorted(ENTITIES)),
    kind=st.sampled_from([OpKind.CREATE.value, OpKind.SET.value]),
    allow_sealed=st.booleans(),
    data=st.data(),
)
def test_a_fast_yes_is_always_a_marshmallow_yes(entity: str, kind: str, allow_sealed: bool, data) -> None:  # type: ignore[no-untyped-def]
    spec = ENTITIES[entity]
    names = [f.name for f in spec.fields]
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    if kind == OpKind.CREATE and data.draw(st.booleans()):
        chosen = sorted(set(chosen) | {f.name for f in spec.fields if f.required})
    values = {n: data.draw(VALUES) for n in chosen}
    if plainly_valid(spec, kind, values, allow_sealed, False):
        assert values_schema(entity, kind, allow_sealed, False).validate(values) == {}


def test_the_fast_check_takes_ordinary_ops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """It must actually be used: realistic valid values pass it without marshmallow."""
    from tests.opgen import Device

    dev = Device("village")
    case = dev.create_case()
    ops = [case, dev.set(case.case_id, {"title": "新标题", "people_count": 3}),
           dev.child("visit", case.case_id), dev.child("party", case.case_id)]
    for op in ops:
        assert plainly_valid(ENTITIES[op.entity], op.kind, op.values, False, False), op.entity

"""The domain's enumerations: stable values, a Chinese and an English label each."""

from __future__ import annotations

import re

import pytest

from schema import enums as E
from schema.entities import ENTITIES
from schema.lifecycle import TRANSITIONS

ENUMS = [
    obj
    for obj in vars(E).values()
    if isinstance(obj, type) and issubclass(obj, E.LabeledEnum) and obj is not E.LabeledEnum
]
HAN = re.compile(r"[\u4e00-\u9fff]")


def test_every_enum_of_the_module_is_found() -> None:
    names = {e.__name__ for e in ENUMS}
    assert {"Category", "Level", "State", "Action", "OpKind", "ConflictKind", "CaseTag"} <= names


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_every_member_has_a_stable_identifier_and_both_labels(enum: type[E.LabeledEnum]) -> None:
    assert len(enum) > 0
    for member in enum:
        assert re.fullmatch(r"[a-z][a-z_]*", member.value), member.value
        assert HAN.search(member.zh), f"{member!r} has no Chinese label"
        assert member.en and not HAN.search(member.en)
        assert member.label() == member.zh
        assert member.label("zh") == member.zh
        assert member.label("en") == member.en


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_values_lists_every_member_in_order_and_each_looks_itself_up(
    enum: type[E.LabeledEnum],
) -> None:
    values = enum.values()
    assert values == [m.value for m in enum]
    assert len(set(values)) == len(values)
    for value in values:
        member = enum(value)  # type: ignore[call-arg]  # lookup by value, not construction
        assert member == value and isinstance(member, str)


def test_a_member_compares_and_serialises_as_its_value() -> None:
    assert E.Level.TOWNSHIP == "township"
    assert f"{E.State.IN_HANDLING}" == "in_handling"
    assert str(E.Category.ACCUSATION) == "accusation"


def test_an_unknown_value_is_not_a_member() -> None:
    with pytest.raises(ValueError):
        E.Level("province")  # type: ignore[call-arg]


def test_the_level_order_runs_village_township_county() -> None:
    assert set(E.LEVEL_ORDER) == set(E.Level)
    assert sorted(E.Level, key=E.LEVEL_ORDER.__getitem__) == [
        E.Level.VILLAGE,
        E.Level.TOWNSHIP,
        E.Level.COUNTY,
    ]


def test_the_op_kinds_are_those_of_the_contract() -> None:
    assert E.OpKind.values() == ["create", "set", "transition", "void", "resolve", "add", "remove"]


def test_the_entities_are_those_of_the_contract() -> None:
    assert list(ENTITIES) == [
        "case",
        "party",
        "visit",
        "mediation",
        "notice",
        "leader_assignment",
        "evaluation",
        "note",
        "alert",
    ]


def test_every_action_is_in_the_state_machine_and_every_state_in_the_enum() -> None:
    assert set(E.Action.values()) == set(TRANSITIONS)
    for sources, target in TRANSITIONS.values():
        assert {str(s) for s in sources} <= set(E.State.values())
        assert target is None or target in E.State.values()


def test_the_statutory_categories_are_all_present() -> None:
    assert {"suggestion", "accusation", "complaint"} <= set(E.Category.values())
    assert E.Category.ACCUSATION.zh == "检举控告类"


def test_ratings_are_the_three_of_the_satisfaction_rate() -> None:
    assert [m.zh for m in E.Rating] == ["满意", "基本满意", "不满意"]


def test_every_enum_field_of_an_entity_names_a_labeled_enum() -> None:
    for spec in ENTITIES.values():
        for f in spec.fields:
            if f.kind == "enum":
                assert f.enum in ENUMS, (spec.name, f.name)
            if f.enum is not None:
                assert f.kind in ("enum", "set"), (spec.name, f.name)

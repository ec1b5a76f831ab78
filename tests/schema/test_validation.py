"""Bad input is refused with a stable code and the path of what is wrong (docs/oplog.md, "Errors").

Every refusal test starts from a valid op made by ``tests.opgen`` and spoils one thing, so
the only reason for the refusal is that one thing. The replica tests at the end check that
a batch holding a bad op changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conflict.errors import OpIdReused
from conflict.replica import Replica
from schema.errors import OpInvalid, OpsRejected
from schema.ops import Op
from schema.validation import parse_op, parse_ops
from tests.opgen import Device, altered

VALID_ID = "11010519491231002X"
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.fixture
def dev() -> Device:
    return Device("village")


@pytest.fixture
def case(dev: Device) -> Op:
    return dev.create_case()


def refusal(data: Any, *, allow_sealed: bool = False) -> OpInvalid:
    with pytest.raises(OpInvalid) as info:
        parse_op(data, allow_sealed=allow_sealed)
    return info.value


def names_path(details: Any, path: str) -> bool:
    """``details`` names ``path``: as a key (marshmallow style) or as ``{"field": path}``."""
    return isinstance(details, dict) and (path in details or details.get("field") == path)


def state_of(replica: Replica) -> tuple[Any, int, str]:
    return replica.snapshot(), replica.op_count(), replica.digest()


# ---- a valid op passes (so the refusals below are about the one thing spoilt) ----


def test_a_valid_op_of_every_kind_is_accepted_unchanged(dev: Device, case: Op) -> None:
    cid = case.case_id
    party = dev.child("party", cid, {"id_number": VALID_ID, "phone": "13800138000"})
    ops = [
        case,
        party,
        dev.child("mediation", cid, {"outcome": "agreement", "agreement_form": "oral"}),
        dev.set(cid, {"title": "新标题", "people_count": 3, "simplified": True}),
        dev.transition(cid, "accept"),
        dev.transition(cid, "extend", days=30),
        dev.void(cid, entity="party", entity_id=party.entity_id),
        dev.resolve(cid, [case.op_id], field="title", value="定稿"),
        dev.add(cid, "tags", ["key", "group"]),
        dev.remove(cid, "tags", ["key"]),
    ]
    for op in ops:
        assert parse_op(op.to_dict()) == op


# ---- the envelope ----


def test_an_op_that_is_not_a_mapping_is_refused() -> None:
    assert refusal(["op"]).code == "op.not_a_mapping"


def test_a_missing_top_level_key_is_refused_and_named(case: Op) -> None:
    data = case.to_dict()
    del data["occurred_at"]
    err = refusal(data)
    assert err.code == "op.missing_field"
    assert "occurred_at" in err.details
    assert err.details["context"] == {"missing": ["occurred_at"]}


def test_an_unknown_top_level_key_is_refused_and_named(case: Op) -> None:
    err = refusal({**case.to_dict(), "priority": "high"})
    assert err.code == "op.unknown_op_field"
    assert "priority" in err.details
    assert err.details["context"] == {"unknown": ["priority"]}


def test_an_unknown_entity_is_refused(case: Op) -> None:
    err = refusal(altered(case, entity="livestock"))
    assert err.code == "op.unknown_entity"
    assert "livestock" in err.message


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"entity": "livestock"}, "op.unknown_entity", "entity"),
        ({"kind": "teleport"}, "op.unknown_kind", "kind"),
        ({"occurred_at": "2025-11-22T09:00:00"}, "op.bad_time", "occurred_at"),
        ({"author": ""}, "op.bad_author", "author"),
        ({"schema_version": 0}, "op.bad_version", "schema_version"),
    ],
)
def test_an_envelope_refusal_names_the_offending_key_in_details(
    case: Op, change: dict[str, Any], code: str, path: str
) -> None:
    err = refusal(altered(case, **change))
    assert err.code == code
    assert names_path(err.details, path)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"kind": "teleport"}, "op.unknown_kind"),
        ({"occurred_at": "2025-11-22T09:00:00"}, "op.bad_time"),
        ({"occurred_at": "yesterday"}, "op.bad_time"),
        ({"author": ""}, "op.bad_author"),
        ({"author": "x" * 65}, "op.bad_author"),
        ({"schema_version": 0}, "op.bad_version"),
        ({"schema_version": "1"}, "op.bad_version"),
        ({"schema_version": True}, "op.bad_version"),
        ({"values": ["title"]}, "op.wrong_type"),
    ],
)
def test_a_malformed_envelope_value_is_refused_with_its_code(
    case: Op, change: dict[str, Any], code: str
) -> None:
    assert refusal(altered(case, **change)).code == code


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("op_id", "AB" * 16),  # upper case
        ("op_id", "ab" * 15),  # 30 hex
        ("op_id", "7d1e0000-0000-4000-8000-000000000000"),  # a UUID with dashes
        ("op_id", 12345),
        ("entity_id", "xyz"),
        ("case_id", "g" * 32),
        ("device", "short"),
    ],
)
def test_a_malformed_id_is_refused_and_named(case: Op, key: str, value: Any) -> None:
    change: dict[str, Any] = {key: value}
    if key in ("entity_id", "case_id"):  # keep the case's two ids equal, so only the form is wrong
        change = {"entity_id": value, "case_id": value}
    err = refusal(altered(case, **change))
    assert err.code == "op.bad_id"
    assert names_path(err.details, key if key != "case_id" else "entity_id")


def test_an_op_id_with_a_trailing_newline_is_refused(case: Op) -> None:
    err = refusal(altered(case, op_id=case.op_id + "\n"))
    assert err.code == "op.bad_id"


def test_a_device_and_stamp_with_a_trailing_newline_are_refused(case: Op) -> None:
    err = refusal(altered(case, device=case.device + "\n", stamp=case.stamp + "\n"))
    assert err.code in ("op.bad_id", "op.bad_stamp")


def test_a_case_whose_case_id_differs_from_its_entity_id_is_refused(dev: Device, case: Op) -> None:
    assert refusal(altered(case, case_id=dev.new_id())).code == "op.bad_case_id"


def test_a_child_entity_whose_case_id_equals_its_own_id_is_refused(dev: Device, case: Op) -> None:
    visit = dev.child("visit", case.case_id)
    assert refusal(altered(visit, case_id=visit.entity_id)).code == "op.bad_case_id"


def test_a_transition_on_a_visit_is_refused(dev: Device, case: Op) -> None:
    visit = dev.child("visit", case.case_id)
    t = dev.transition(case.case_id, "accept")
    err = refusal(altered(visit, kind="transition", values=t.values))
    assert err.code == "op.kind_not_for_entity"


# ---- the stamp ----


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "2025-11-22T09:00:00+08:00",
        "000001763787000123.0000.a1b2c3d4e5f60718",  # 4-digit counter
        "1763787000123.00000.a1b2c3d4e5f60718",  # short ms
        "000001763787000123.00000.A1B2C3D4E5F60718",  # upper-case node
        "000001763787000123-00000-a1b2c3d4e5f60718",
        1763787000123,
        None,
    ],
)
def test_an_unparseable_stamp_is_refused_and_named(case: Op, stamp: Any) -> None:
    err = refusal(altered(case, stamp=stamp))
    assert err.code == "op.bad_stamp"
    assert names_path(err.details, "stamp")


def test_a_stamp_written_in_full_width_digits_is_refused(case: Op) -> None:
    full_width = case.stamp[:18].translate(FULL_WIDTH) + case.stamp[18:]
    err = refusal(altered(case, stamp=full_width))
    assert err.code == "op.bad_stamp"


def test_a_stamp_whose_node_is_not_the_device_is_refused(case: Op) -> None:
    other_node = "zzzzzzzzzzzzzzzz"
    err = refusal(altered(case, stamp=case.stamp[:25] + other_node))
    assert err.code == "op.device_mismatch"


def test_a_device_mismatch_names_the_stamp_and_device(case: Op) -> None:
    err = refusal(altered(case, stamp=case.stamp[:25] + "zzzzzzzzzzzzzzzz"))
    assert names_path(err.details, "stamp") or names_path(err.details, "device")


def test_an_unparseable_base_stamp_is_refused_and_named(dev: Device, case: Op) -> None:
    edit = dev.set(case.case_id, {"title": "新标题"})
    err = refusal(altered(edit, base={"title": "last tuesday"}))
    assert err.code == "op.bad_stamp"
    assert names_path(err.details, "base.title")


# ---- values: unknown, missing, wrong type, bad value ----


def test_an_unknown_field_is_refused_with_its_path(case: Op) -> None:
    err = refusal(altered(case, values={**case.values, "favourite_colour": "red"}))
    assert err.code == "op.unknown_field"
    assert names_path(err.details, "values.favourite_colour")


def test_an_unknown_field_in_a_set_is_refused_with_its_path(dev: Device, case: Op) -> None:
    edit = dev.set(case.case_id, {"title": "x"})
    err = refusal(altered(edit, values={"mood": "calm"}, base={"mood": None}))
    assert err.code == "op.unknown_field"
    assert names_path(err.details, "values.mood")


def test_an_unknown_field_from_a_newer_schema_version_is_kept(case: Op) -> None:
    data = altered(case, values={**case.values, "grid_cell": "G-17"}, schema_version=2)
    op = parse_op(data)
    assert op.values["grid_cell"] == "G-17"
    assert op.schema_version == 2


def test_an_unknown_field_from_a_newer_schema_lands_in_the_rows_extra(
    tmp_path: Path, case: Op
) -> None:
    newer = dataclasses.replace(
        case, values={**case.values, "grid_cell": "G-17", "gps": [30.2, 120.1]}, schema_version=2
    )
    with Replica(tmp_path / "r.db") as replica:
        replica.apply([newer])
        row = replica.get("case", case.case_id)
        assert row is not None
        assert json.loads(row["extra"]) == {"grid_cell": "G-17", "gps": [30.2, 120.1]}
        assert row["title"] == case.values["title"]
        assert replica.verify_rebuild() == []


def test_a_known_field_keeps_its_own_column_and_no_extra(tmp_path: Path, case: Op) -> None:
    with Replica(tmp_path / "r.db") as replica:
        replica.apply([case])
        row = replica.get("case", case.case_id)
        assert row is not None and row["extra"] is None


def test_an_unknown_kind_from_a_newer_schema_is_kept_and_ignored_by_the_fold(
    tmp_path: Path, dev: Device, case: Op
) -> None:
    future = dev.op(
        entity="case",
        entity_id=case.case_id,
        case_id=case.case_id,
        kind="merge_cases",
        values={"into": "x"},
    )
    future = dataclasses.replace(future, schema_version=2)
    assert parse_op(future.to_dict()) == future
    with Replica(tmp_path / "r.db") as replica:
        replica.apply([case])
        before = replica.get("case", case.case_id)
        replica.apply([future])
        after = replica.get("case", case.case_id)
        assert replica.has_op(future.op_id)
        assert before is not None and after is not None
        assert {k: v for k, v in after.items() if k not in ("fold", "updated_stamp")} == {
            k: v for k, v in before.items() if k not in ("fold", "updated_stamp")
        }


@pytest.mark.parametrize("missing", ["category", "title", "level", "received_at"])
def test_a_missing_required_value_is_refused_with_its_path(case: Op, missing: str) -> None:
    values = {k: v for k, v in case.values.items() if k != missing}
    err = refusal(altered(case, values=values))
    assert err.code == "op.missing_value"
    assert names_path(err.details, f"values.{missing}")


def test_an_empty_required_text_is_refused(case: Op) -> None:
    err = refusal(altered(case, values={**case.values, "title": ""}))
    assert err.code == "op.bad_value"
    assert names_path(err.details, "values.title")


def test_a_set_with_no_values_is_refused(dev: Device, case: Op) -> None:
    edit = dev.set(case.case_id, {"title": "x"})
    assert refusal(altered(edit, values={}, base={})).code == "op.missing_value"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("people_count", "3"),
        ("people_count", True),
        ("people_count", 2.5),
        ("simplified", "yes"),
        ("simplified", 1),
        ("title", 42),
        ("title", None),
        ("received_at", "next week"),
        ("tags", "key"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_its_path(
    case: Op, name: str, value: Any
) -> None:
    err = refusal(altered(case, values={**case.values, name: value}))
    assert err.code == "op.wrong_type"
    assert names_path(err.details, f"values.{name}")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("category", "gossip"),
        ("people_count", 0),
        ("title", "长" * 201),
        ("related_case", "not-an-id"),
        ("tags", ["urgent"]),
    ],
)
def test_a_value_that_breaks_a_rule_is_refused_with_its_path(
    case: Op, name: str, value: Any
) -> None:
    err = refusal(altered(case, values={**case.values, name: value}))
    assert err.code == "op.bad_value"
    assert any(path.startswith(f"values.{name}") for path in err.details)


def test_a_wrong_type_in_a_set_op_is_refused_with_its_path(dev: Device, case: Op) -> None:
    edit = dev.set(case.case_id, {"people_count": "3"})
    err = refusal(edit.to_dict())
    assert err.code == "op.wrong_type"
    assert names_path(err.details, "values.people_count")


# ---- transitions ----


def test_a_transition_action_the_machine_does_not_know_is_refused(dev: Device, case: Op) -> None:
    op = dev.transition(case.case_id, "teleport")
    err = refusal(op.to_dict())
    assert err.code == "op.unknown_action"
    assert names_path(err.details, "values.action")


@pytest.mark.parametrize("action", [["close"], {"close": True}])
def test_a_transition_action_that_is_not_text_is_refused(
    dev: Device, case: Op, action: Any
) -> None:
    op = dev.transition(case.case_id, "close")
    err = refusal(altered(op, values={**op.values, "action": action}))
    assert err.code in ("op.wrong_type", "op.unknown_action")


@pytest.mark.parametrize(
    ("action", "drop", "path"),
    [
        ("escalate", "to_node", "values.to_node"),
        ("route", "to_node", "values.to_node"),
        ("decide", "decision", "values.decision"),
        ("close", "acting_level", "values.acting_level"),
    ],
)
def test_a_transition_missing_what_its_action_needs_is_refused(
    dev: Device, case: Op, action: str, drop: str, path: str
) -> None:
    op = dev.transition(case.case_id, action)
    values = {k: v for k, v in op.values.items() if k != drop}
    err = refusal(altered(op, values=values))
    assert err.code == "op.missing_value"
    assert names_path(err.details, path)


@pytest.mark.parametrize(
    ("extra", "code", "path"),
    [
        ({"acting_level": "province"}, "op.bad_value", "values.acting_level"),
        ({"days": 31}, "op.bad_value", "values.days"),
        ({"days": "10"}, "op.wrong_type", "values.days"),
        ({"decision": "maybe"}, "op.bad_value", "values.decision"),
        ({"colour": "red"}, "op.unknown_field", "values.colour"),
    ],
)
def test_a_transition_value_that_breaks_a_rule_is_refused(
    dev: Device, case: Op, extra: dict[str, Any], code: str, path: str
) -> None:
    op = dev.transition(case.case_id, "extend", days=10)
    err = refusal(altered(op, values={**op.values, **extra}))
    assert err.code == code
    assert names_path(err.details, path)


# ---- set, base, resolve, add/remove ----


@pytest.mark.parametrize("name", ["level", "node"])
def test_a_set_of_a_create_only_field_is_refused_as_not_settable(
    dev: Device, case: Op, name: str
) -> None:
    op = dev.set(case.case_id, {name: "county" if name == "level" else "3301"})
    err = refusal(op.to_dict())
    assert err.code == "op.not_settable"
    assert names_path(err.details, f"values.{name}")


def test_a_set_of_a_set_valued_field_is_refused_as_not_settable(dev: Device, case: Op) -> None:
    err = refusal(dev.set(case.case_id, {"tags": ["key"]}).to_dict())
    assert err.code == "op.not_settable"
    assert names_path(err.details, "values.tags")


@pytest.mark.parametrize(
    "base",
    [{}, {"summary": None}, {"title": None, "summary": None}],
    ids=["no-base", "other-field", "extra-field"],
)
def test_a_base_that_does_not_name_exactly_the_fields_written_is_refused(
    dev: Device, case: Op, base: dict[str, Any]
) -> None:
    op = dev.set(case.case_id, {"title": "新标题"})
    err = refusal(altered(op, base=base))
    assert err.code == "op.bad_base"
    assert "base" in err.details
    assert err.details["context"] == {"expected": ["title"], "got": sorted(base)}


def test_a_create_with_a_base_is_refused(case: Op) -> None:
    assert refusal(altered(case, base={"title": None})).code == "op.bad_base"


def test_a_transition_with_a_base_is_refused(dev: Device, case: Op) -> None:
    op = dev.transition(case.case_id, "accept")
    assert refusal(altered(op, base={"state": None})).code == "op.bad_base"


def test_a_resolve_of_a_create_only_field_is_refused(dev: Device, case: Op) -> None:
    op = dev.resolve(case.case_id, [case.op_id], field="title", value="x")
    err = refusal(
        altered(op, values={**op.values, "field": "level", "value": "county"}, base={"level": None})
    )
    assert err.code == "op.unknown_field"
    assert names_path(err.details, "values.field")


def test_a_resolve_value_of_the_wrong_type_is_refused(dev: Device, case: Op) -> None:
    op = dev.resolve(case.case_id, [case.op_id], field="people_count", value="3")
    err = refusal(op.to_dict())
    assert err.code == "op.wrong_type"
    assert any(path.startswith("values.value") for path in err.details)


def test_a_resolve_with_a_value_but_no_field_is_refused(dev: Device, case: Op) -> None:
    op = dev.resolve(case.case_id, [case.op_id])
    assert refusal(altered(op, values={**op.values, "value": "x"})).code == "op.bad_value"


def test_an_add_to_a_field_that_is_not_a_set_is_refused(dev: Device, case: Op) -> None:
    err = refusal(dev.add(case.case_id, "title", ["x"]).to_dict())
    assert err.code == "op.unknown_field"
    assert names_path(err.details, "values.field")


def test_an_add_of_an_item_outside_the_enum_is_refused(dev: Device, case: Op) -> None:
    err = refusal(dev.add(case.case_id, "tags", ["urgent"]).to_dict())
    assert err.code == "op.bad_value"
    assert names_path(err.details, "values.items")


def test_a_remove_without_observed_tags_is_refused(dev: Device, case: Op) -> None:
    op = dev.remove(case.case_id, "tags", ["key"], observed=[])
    values = {k: v for k, v in op.values.items() if k != "observed"}
    err = refusal(altered(op, values=values))
    assert err.code == "op.missing_value"
    assert names_path(err.details, "values.observed")


# ---- rules of the domain: mediation agreement, ID numbers, phones ----


def test_a_mediation_agreement_without_its_form_is_refused(dev: Device, case: Op) -> None:
    op = dev.child("mediation", case.case_id, {"outcome": "agreement"})
    err = refusal(op.to_dict())
    assert err.code == "op.missing_value"
    assert names_path(err.details, "values.agreement_form")


@pytest.mark.parametrize("form", ["written", "oral"])
def test_a_mediation_agreement_with_its_form_is_accepted(dev: Device, case: Op, form: str) -> None:
    op = dev.child("mediation", case.case_id, {"outcome": "agreement", "agreement_form": form})
    assert parse_op(op.to_dict()).values["agreement_form"] == form


def test_a_mediation_without_agreement_needs_no_form(dev: Device, case: Op) -> None:
    op = dev.child("mediation", case.case_id, {"outcome": "no_agreement", "remedies_told": True})
    assert parse_op(op.to_dict()) == op


@pytest.mark.parametrize("number", [VALID_ID, VALID_ID.lower(), "110105491231002"])
def test_a_valid_id_number_is_accepted(dev: Device, case: Op, number: str) -> None:
    op = dev.child("party", case.case_id, {"id_number": number})
    assert parse_op(op.to_dict()).values["id_number"] == number


@pytest.mark.parametrize("position", range(18))
def test_an_id_number_with_one_character_changed_is_refused(
    dev: Device, case: Op, position: int
) -> None:
    old = VALID_ID[position]
    new = "0" if old == "X" else str((int(old) + 1) % 10)
    number = VALID_ID[:position] + new + VALID_ID[position + 1 :]
    op = dev.child("party", case.case_id, {"id_number": number})
    err = refusal(op.to_dict())
    assert err.code == "op.bad_value"
    assert names_path(err.details, "values.id_number")


@pytest.mark.parametrize(
    "number", ["1101051949123100", "11010519491231002Y", "X1010519491231002X", "１１０"]
)
def test_a_malformed_id_number_is_refused(dev: Device, case: Op, number: str) -> None:
    err = refusal(dev.child("party", case.case_id, {"id_number": number}).to_dict())
    assert err.code == "op.bad_value"
    assert names_path(err.details, "values.id_number")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id_number", VALID_ID.translate(FULL_WIDTH)),
        ("phone", "13" + "800138000".translate(FULL_WIDTH)),
    ],
)
def test_an_id_number_or_phone_in_full_width_digits_is_refused(
    dev: Device, case: Op, name: str, value: str
) -> None:
    err = refusal(dev.child("party", case.case_id, {name: value}).to_dict())
    assert err.code == "op.bad_value"


@pytest.mark.parametrize(
    "phone", ["13800138000", "19912345678", "010-12345678", "0571-8765432", "057187654321"]
)
def test_a_mobile_or_landline_number_is_accepted(dev: Device, case: Op, phone: str) -> None:
    op = dev.child("party", case.case_id, {"phone": phone})
    assert parse_op(op.to_dict()).values["phone"] == phone


@pytest.mark.parametrize(
    "phone",
    ["12800138000", "1380013800", "138001380001", "138-0013-8000", "571-8765432", "电话", ""],
)
def test_a_malformed_phone_number_is_refused(dev: Device, case: Op, phone: str) -> None:
    err = refusal(dev.child("party", case.case_id, {"phone": phone}).to_dict())
    assert err.code == "op.bad_value"
    assert names_path(err.details, "values.phone")


def test_a_phone_number_with_a_trailing_newline_is_refused(dev: Device, case: Op) -> None:
    err = refusal(dev.child("party", case.case_id, {"phone": "13800138000\n"}).to_dict())
    assert err.code == "op.bad_value"


# ---- sealed tokens (enc1:...) ----

SEALED = "enc1:q83vEjRWeJA="


@pytest.mark.parametrize("name", ["id_number", "phone", "name", "address"])
def test_a_sealed_token_in_a_personal_field_is_accepted_when_sealed_values_are_allowed(
    dev: Device, case: Op, name: str
) -> None:
    op = dev.child("party", case.case_id, {name: SEALED})
    assert parse_op(op.to_dict(), allow_sealed=True).values[name] == SEALED


@pytest.mark.parametrize("name", ["id_number", "phone"])
def test_a_sealed_token_in_a_personal_field_is_refused_when_sealed_values_are_not_allowed(
    dev: Device, case: Op, name: str
) -> None:
    err = refusal(dev.child("party", case.case_id, {name: SEALED}).to_dict(), allow_sealed=False)
    assert err.code == "op.bad_value"
    assert names_path(err.details, f"values.{name}")


@pytest.mark.parametrize(
    ("entity", "name"), [("party", "name"), ("party", "address"), ("note", "text")]
)
def test_a_sealed_token_in_a_personal_text_field_is_refused_when_sealed_values_are_not_allowed(
    dev: Device, case: Op, entity: str, name: str
) -> None:
    err = refusal(dev.child(entity, case.case_id, {name: SEALED}).to_dict(), allow_sealed=False)
    assert names_path(err.details, f"values.{name}")


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("category", "op.bad_value"),
        ("people_count", "op.wrong_type"),
        ("received_at", "op.wrong_type"),
    ],
)
def test_a_sealed_token_in_a_typed_non_personal_field_is_refused_even_when_allowed(
    case: Op, name: str, code: str
) -> None:
    err = refusal(altered(case, values={**case.values, name: SEALED}), allow_sealed=True)
    assert err.code == code
    assert names_path(err.details, f"values.{name}")


@pytest.mark.parametrize(
    ("entity", "name"),
    [("case", "first_receiver"), ("party", "organisation"), ("leader_assignment", "plan")],
)
def test_a_sealed_token_in_a_non_personal_text_field_is_refused_even_when_allowed(
    dev: Device, case: Op, entity: str, name: str
) -> None:
    op = case if entity == "case" else dev.child(entity, case.case_id)
    err = refusal(altered(op, values={**op.values, name: SEALED}), allow_sealed=True)
    assert names_path(err.details, f"values.{name}")


# ---- batches: parse_ops and the replica ----


def test_parse_ops_lists_every_bad_op_by_index(dev: Device, case: Op) -> None:
    good = dev.set(case.case_id, {"title": "x"})
    items = [
        case.to_dict(),
        altered(good, entity="livestock"),
        good.to_dict(),
        altered(good, values={"title": 5}),
    ]
    with pytest.raises(OpsRejected) as info:
        parse_ops(items)
    assert info.value.code == "ops.rejected"
    assert [(d["index"], d["code"]) for d in info.value.details] == [
        (1, "op.unknown_entity"),
        (3, "op.wrong_type"),
    ]


def _stocked_replica(path: Path, dev: Device) -> tuple[Replica, Op]:
    replica = Replica(path)
    case = dev.create_case()
    replica.apply([case, dev.set(case.case_id, {"title": "旧"}), dev.child("visit", case.case_id)])
    return replica, case


def test_a_batch_with_one_bad_op_among_good_ones_applies_nothing(
    tmp_path: Path, dev: Device
) -> None:
    replica, case = _stocked_replica(tmp_path / "r.db", dev)
    before = state_of(replica)
    other = dev.create_case()
    batch: list[Op | dict[str, Any]] = [
        other,
        dev.set(case.case_id, {"title": "新"}),
        altered(dev.set(case.case_id, {"category": "x"}), values={"category": "gossip"}),
        dev.transition(case.case_id, "accept"),
    ]
    with pytest.raises(OpsRejected) as info:
        replica.apply(batch)
    assert [(d["index"], d["code"]) for d in info.value.details] == [(2, "op.bad_value")]
    assert names_path(info.value.details[0]["details"], "values.category")
    assert state_of(replica) == before
    assert not replica.has_op(other.op_id)
    # and the same batch without the bad op applies: the refusal was that op's alone
    replica.apply(batch[:2] + batch[3:])
    assert replica.op_count() == before[1] + 3
    replica.close()


def test_an_op_id_reused_within_one_batch_is_refused_and_nothing_applied(
    tmp_path: Path, dev: Device
) -> None:
    replica, case = _stocked_replica(tmp_path / "r.db", dev)
    before = state_of(replica)
    edit = dev.set(case.case_id, {"title": "甲"})
    twin = dataclasses.replace(edit, values={"title": "乙"})
    fresh = dev.create_case()
    with pytest.raises(OpIdReused) as info:
        replica.apply([fresh, edit, twin])
    assert info.value.code == "op.id_reused"
    assert state_of(replica) == before
    replica.close()


def test_an_op_id_reused_against_a_stored_op_is_refused_and_nothing_applied(
    tmp_path: Path, dev: Device
) -> None:
    replica, case = _stocked_replica(tmp_path / "r.db", dev)
    stored = replica.ops_for_entity("case", case.case_id)[-1]
    before = state_of(replica)
    twin = dataclasses.replace(stored, author="mallory")
    fresh = dev.create_case()
    with pytest.raises(OpIdReused) as info:
        replica.apply([fresh, twin])
    assert info.value.code == "op.id_reused"
    assert info.value.details == {"op_id": stored.op_id}
    assert state_of(replica) == before
    assert replica.ops_for_entity("case", case.case_id)[-1] == stored
    replica.close()


def test_an_op_id_reused_within_a_batch_with_numerically_equal_values_is_refused(
    tmp_path: Path, case: Op
) -> None:
    one = dataclasses.replace(case, values={**case.values, "grid_size": 1}, schema_version=2)
    one_point_oh = dataclasses.replace(one, values={**case.values, "grid_size": 1.0})
    assert one.content_key() != one_point_oh.content_key()
    with Replica(tmp_path / "r.db") as replica, pytest.raises(OpIdReused):
        replica.apply([one, one_point_oh])

"""field_client.forms: typed text into op values, and op errors into sentences per field."""

from __future__ import annotations

from datetime import datetime

import pytest

from conflict.author import make_op
from field_client.forms import choices, coerce, enum_member, explain, label
from schema.enums import Action, Category, Level, PartyRole, Subject
from schema.errors import OpInvalid, OpsRejected
from schema.obligations import CHINA
from schema.validation import check_op, parse_ops

GOOD_ID = "11010519491231002X"


def _op(entity: str, values: dict[str, object], kind: str = "create"):  # type: ignore[no-untyped-def]
    case_id = "a" * 32
    op, _ = make_op(last=None, wall_ms=1_795_000_000_000, device="0123456789abcdef", author="wangli",
                    op_id="b" * 32, entity=entity, entity_id=case_id if entity == "case" else "c" * 32,
                    case_id=case_id, kind=kind, values=values, occurred_at=datetime.now(CHINA).isoformat())
    return op


@pytest.mark.parametrize(
    ("enum", "text", "value"),
    [
        (Category, "矛盾纠纷", "dispute"), (Category, "dispute", "dispute"), (Category, "DISPUTE", "dispute"),
        (PartyRole, "信访人", "petitioner"), (PartyRole, "申请人", "petitioner"), (PartyRole, "被申请人", "respondent"),
        (Subject, "两拖欠", "wage_arrears"), (Level, "村", "village"), (Level, "乡镇级", "township"),
        (Action, "上报", "escalate"), (Action, "report up", "escalate"), (Action, "开始办理", "start"),
    ],
)
def test_enum_members_are_found_by_value_label_or_a_clear_part_of_it(enum, text, value) -> None:  # type: ignore[no-untyped-def]
    m = enum_member(enum, text)
    assert m is not None and m.value == value


def test_an_ambiguous_or_unknown_word_names_no_member() -> None:
    assert enum_member(Action, "转送") is not None  # only route's label has it
    assert enum_member(Category, "类") is None
    assert enum_member(Category, "nonsense") is None


def test_coerce_types_every_kind_of_field() -> None:
    values, errors = coerce("case", {
        "title": " 宅基地纠纷 ", "类别": "矛盾纠纷", "subject": "neighbour", "channel": "来访",
        "people_count": "12", "simplified": "是", "not_public": "no", "tags": "重点关注、group",
        "received_at": "2026/11/20 8:05",
    })
    assert errors == {}
    assert values == {
        "title": "宅基地纠纷", "category": "dispute", "subject": "neighbour", "channel": "visit",
        "people_count": 12, "simplified": True, "not_public": False, "tags": ["key", "group"],
        "received_at": "2026-11-20T08:05:00+08:00",
    }
    values, errors = coerce("mediation", {"kind": "people", "mediator": "王", "held_at": "2026-11-20T09:00:00+00:00",
                                          "outcome": "中止", "performance_due": "2026年12月1日"})
    assert errors == {} and values["held_at"] == "2026-11-20T09:00:00+00:00" and values["performance_due"] == "2026-12-01"


def test_coerce_reports_every_field_at_once_with_its_chinese_label() -> None:
    values, errors = coerce("party", {"role": "boss", "id_number": GOOD_ID[:-1] + "1", "phone": "12345"})
    assert set(errors) == {"role", "name", "id_number", "phone"}
    assert errors["role"].startswith("角色：") and "信访人/申请人(petitioner)" in errors["role"]
    assert errors["name"] == "姓名：必须填写"
    assert errors["id_number"].startswith("身份证号：") and "校验" in errors["id_number"]
    assert errors["phone"].startswith("电话：")
    assert values == {}


def test_coerce_speaks_english_when_asked() -> None:
    _, errors = coerce("party", {"role": "petitioner"}, lang="en")
    assert errors == {"name": "name: is required"}


def test_coerce_fills_nothing_the_store_fills_itself_and_checks_the_rest() -> None:
    _, errors = coerce("case", {"title": "t", "category": "dispute", "subject": "other", "channel": "visit"})
    assert errors == {}  # case_no, node, level, received_at ... come from FieldClient.new_case
    _, errors = coerce("visit", {"kind": "home", "visitor": "w"})
    assert set(errors) == {"visited_at"} and "时间" in errors["visited_at"]


def test_an_agreement_without_its_form_is_caught_before_the_store() -> None:
    _, errors = coerce("mediation", {"kind": "people", "mediator": "w", "held_at": "2026-11-20 09:00",
                                     "outcome": "达成协议"})
    assert set(errors) == {"agreement_form"} and "书面协议(written)" in errors["agreement_form"]


def test_partial_coerce_is_for_edits_and_refuses_lifecycle_and_set_fields() -> None:
    values, errors = coerce("case", {"title": "新", "summary": ""}, partial=True)
    assert values == {"title": "新", "summary": ""} and errors == {}
    _, errors = coerce("case", {"level": "county", "tags": "key", "node": "X", "title": "  "}, partial=True)
    assert set(errors) == {"level", "tags", "node", "title"}
    assert "不能为空" in errors["title"]


def test_unknown_keys_are_named_with_what_can_be_filled() -> None:
    _, errors = coerce("note", {"text": "x", "written_at": "2026-11-20 09:00", "colour": "red"})
    assert set(errors) == {"colour"} and "内容(text)" in errors["colour"]


def test_explain_turns_an_op_error_into_a_sentence_per_field() -> None:
    op = _op("party", {"role": "petitioner", "name": "张三", "id_number": "110105194912310021"})
    with pytest.raises(OpInvalid) as caught:
        check_op(op)
    assert explain(caught.value, "party") == {"id_number": "身份证号：最后一位校验码不对，请核对号码"}
    assert explain(caught.value, "party", lang="en")["id_number"].startswith("id number: ")


def test_explain_names_the_field_of_a_rule_beyond_one_field() -> None:
    op = _op("mediation", {"kind": "people", "mediator": "w", "held_at": "2026-11-20T09:00:00+08:00",
                           "outcome": "agreement"})
    with pytest.raises(OpInvalid) as caught:
        check_op(op)
    assert set(explain(caught.value, "mediation")) == {"agreement_form"}
    assert "协议形式" in explain(caught.value, "mediation")["agreement_form"]


def test_explain_reads_a_rejected_batch_and_falls_back_to_a_general_sentence() -> None:
    bad = _op("case", {"title": "t", "category": "nope"})
    with pytest.raises(OpsRejected) as caught:
        parse_ops([bad.to_dict()])
    fields = explain(caught.value, "case")
    assert "category" in fields and fields["category"].startswith("类别：")
    general = explain(OpInvalid("x", code="op.bad_stamp", details={"stamp": ["bad"]}), "case")
    assert list(general) == ["_"] and "op.bad_stamp" in general["_"]


def test_labels_and_choices_read_in_either_language() -> None:
    assert label("party", "id_number") == "身份证号" and label("party", "id_number", "en") == "id number"
    assert label("case", "to_node") == "接收单位"
    assert "矛盾纠纷(dispute)" in choices(Category) and "dispute (civil dispute (mediation))" in choices(Category, "en")

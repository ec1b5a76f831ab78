"""The local web UI through Flask's test client: unlock, caseload, case page, forms, errors."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from field_client.errors import InputInvalid
from field_client.store import FieldClient
from field_client.web import create_app, serve
from schema import lifecycle
from tests.field_client.web_support import (
    BAD_ID,
    CJK,
    GOOD_ID,
    PASSPHRASE,
    UI,
    Clock,
    Page,
    case_values,
    copy_device,
    make_device_template,
    two_parties,
)

# ---- fixtures ----


@pytest.fixture(scope="module")
def device_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_device_template(tmp_path_factory.mktemp("web"))


@pytest.fixture
def data_dir(device_template: Path, tmp_path: Path) -> Path:
    return copy_device(device_template, tmp_path / "data")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(data_dir: Path, clock: Clock) -> Iterator[Flask]:
    app = create_app(data_dir, test_config={"TESTING": True, "MINQING_CLOCK": clock})
    yield app
    app.extensions["minqing"].lock_all()


@pytest.fixture
def ui(app: Flask) -> UI:
    return UI(app.test_client())


@pytest.fixture
def fc(ui: UI, app: Flask) -> FieldClient:
    """Unlock through the page; the FieldClient the server now holds."""
    assert ui.unlock().status == 302
    client: FieldClient = app.extensions["minqing"].client
    return client


def new_case(fc: FieldClient, **over: Any) -> str:
    return fc.new_case(case_values(**over), two_parties())


def register_form(**over: str) -> dict[str, Any]:
    form: dict[str, Any] = {
        "n_parties": "2", "title": "宅基地边界纠纷", "category": "dispute", "subject": "neighbour",
        "channel": "visit", "received_at": "2026-11-22T09:00", "people_count": "2",
        "summary": "张建国反映邻居李秀英建房越界。", "demands": "恢复原界址",
        "p0-role": "petitioner", "p0-name": "张建国", "p0-id_number": GOOD_ID, "p0-phone": "13812345678",
        "p0-address": "东组3号",
        "p1-role": "respondent", "p1-name": "李秀英", "p1-phone": "0571-12345678",
    }
    form.update(over)
    return form


# ---- unlocking ----


def test_root_sends_a_locked_browser_to_the_unlock_page(ui: UI) -> None:
    page = ui.get("/")
    assert page.status == 302 and page.location.endswith("/unlock")
    unlock = ui.get("/unlock")
    assert unlock.status == 200
    assert "解锁本机" in unlock.visible() and "东村" in unlock.visible() and "wangli" in unlock.visible()


def test_pages_need_the_passphrase_first(ui: UI) -> None:
    page = ui.get("/cases?state=accepted")
    assert page.status == 302
    assert "/unlock?next=" in page.location


def test_right_passphrase_unlocks_and_shows_the_caseload(ui: UI) -> None:
    page = ui.unlock()
    assert page.status == 302 and page.location.endswith("/cases")
    cases = ui.get("/cases")
    assert cases.status == 200
    assert "我的案件" in cases.visible()
    assert "待同步 0" in cases.visible()


def test_unlock_returns_to_the_page_first_asked_for(ui: UI) -> None:
    ui.get("/unlock")
    page = ui.post("/unlock", {"passphrase": PASSPHRASE, "next": "/cases?state=accepted"})
    assert page.location.endswith("/cases?state=accepted")


def test_unlock_never_redirects_off_site(ui: UI) -> None:
    ui.get("/unlock")
    page = ui.post("/unlock", {"passphrase": PASSPHRASE, "next": "//evil.example/x"})
    assert page.location.endswith("/cases")


def test_wrong_passphrase_says_so_in_chinese_and_changes_nothing(ui: UI, data_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    page = ui.unlock("not the passphrase")
    assert page.status == 403
    assert page.error("passphrase") is None  # the field's error has its own id
    assert "口令不对，没有做任何更改" in page.visible()
    assert ui.get("/cases").status == 302  # still locked
    after = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    assert after == before


def test_empty_passphrase_is_asked_for_again(ui: UI) -> None:
    page = ui.unlock("")
    assert page.status == 422 and "请输入口令" in page.visible()


def test_a_folder_without_a_device_explains_what_to_do(tmp_path: Path) -> None:
    app = create_app(tmp_path, test_config={"TESTING": True})
    page = UI(app.test_client()).get("/unlock")
    assert page.status == 503
    assert "field-client init" in page.visible() and "client.not_initialised" in page.text
    assert 'name="passphrase"' not in page.text


def test_damaged_database_shows_a_clear_message_and_no_traceback(ui: UI, data_dir: Path) -> None:
    for extra in data_dir.glob("replica.db-*"):
        extra.unlink()
    (data_dir / "replica.db").write_bytes(b"this is not a database at all" * 100)
    page = ui.unlock()
    assert page.status == 503
    assert "数据库已损坏" in page.visible() and "replica.damaged" in page.text
    assert "Traceback" not in page.text and "sqlite3" not in page.text
    assert ui.get("/cases").status == 302


def test_damaged_key_file_shows_a_clear_message(ui: UI, data_dir: Path) -> None:
    (data_dir / "device.json").write_text("{not json", encoding="utf-8")
    page = ui.get("/unlock")
    assert page.status == 503
    assert "密钥文件" in page.visible() and "client.keyfile_damaged" in page.text


def test_session_cookie_is_httponly_and_samesite_strict(app: Flask) -> None:
    client = app.test_client()
    resp = client.get("/unlock")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("minqing_field_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_lock_button_forgets_every_session(ui: UI, fc: FieldClient, app: Flask) -> None:
    page = ui.post("/lock")
    assert page.status == 302 and page.location.endswith("/unlock")
    assert app.extensions["minqing"].client is None
    assert ui.get("/cases").status == 302
    assert "已锁定" in ui.get("/unlock").visible()


# ---- CSRF and other refusals ----


def test_post_without_csrf_token_is_refused_and_changes_nothing(ui: UI, fc: FieldClient) -> None:
    before = fc.pending_count()
    page = ui.post("/cases/new", register_form(), token=False)
    assert page.status == 400
    assert "表单已过期或来源不明" in page.visible() and "web.csrf" in page.text
    assert fc.pending_count() == before
    forged = ui.client.post("/cases/new", data={**register_form(), "csrf_token": "forged"})
    assert forged.status_code == 400 and fc.pending_count() == before


def test_unlock_without_csrf_token_is_refused(ui: UI, app: Flask) -> None:
    page = ui.post("/unlock", {"passphrase": PASSPHRASE}, token=False)
    assert page.status == 400 and app.extensions["minqing"].client is None


def test_unknown_case_is_a_chinese_404(ui: UI, fc: FieldClient) -> None:
    page = ui.get("/cases/" + "0" * 32)
    assert page.status == 404 and "本机上没有这个案件或记录" in page.visible()


def test_unknown_page_is_a_chinese_404(ui: UI) -> None:
    page = ui.get("/nowhere")
    assert page.status == 404 and "没有这个页面" in page.visible() and "http.404" in page.text


def test_unexpected_error_renders_a_chinese_page_with_a_code(
    ui: UI, fc: FieldClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(FieldClient, "list_cases_page", boom)
    page = ui.get("/cases")
    assert page.status == 500
    assert "程序内部出错了" in page.visible() and "web.internal" in page.text
    assert re.search(r'id="error-ref">[0-9a-f]{8}<', page.text)
    assert "secret internals" not in page.text and "Traceback" not in page.text


def test_a_database_failing_mid_session_is_explained(ui: UI, fc: FieldClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: Any, **k: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(FieldClient, "list_cases_page", broken)
    page = ui.get("/cases")
    assert page.status == 503 and "replica.damaged" in page.text and "数据库已损坏" in page.visible()
    assert "malformed" not in page.text


def test_pages_carry_protective_headers(ui: UI, fc: FieldClient) -> None:
    resp = ui.client.get("/cases")
    assert "script-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_requests_for_another_host_are_refused(app: Flask) -> None:
    resp = app.test_client().get("/unlock", headers={"Host": "evil.example"})
    assert resp.status_code == 400 and "Traceback" not in resp.get_data(as_text=True)


# ---- the caseload ----


def test_list_filters_by_state_category_and_level(ui: UI, fc: FieldClient) -> None:
    a = new_case(fc, title="甲案邻里纠纷")
    b = new_case(fc, title="乙案拖欠工资", category="complaint", subject="wage_arrears")
    c = new_case(fc, title="丙案征地补偿", category="complaint", subject="land_requisition")
    fc.transition(b, "accept")
    fc.report_up(c, "t01", "村里解决不了")
    all_cases = ui.get("/cases").visible()
    assert all(t in all_cases for t in ("甲案", "乙案", "丙案"))
    by_state = ui.get("/cases?state=accepted").visible()
    assert "乙案" in by_state and "甲案" not in by_state and "丙案" not in by_state
    by_category = ui.get("/cases?category=complaint").visible()
    assert "乙案" in by_category and "丙案" in by_category and "甲案" not in by_category
    by_level = ui.get("/cases?level=township").visible()
    assert "丙案" in by_level and "甲案" not in by_level and "乙案" not in by_level
    both = ui.get("/cases?category=complaint&level=village")
    assert "乙案" in both.visible() and "丙案" not in both.visible()
    assert both.value("category") == "complaint" and both.value("level") == "village"
    assert a  # the unfiltered one


def test_list_shows_labels_not_codes(ui: UI, fc: FieldClient) -> None:
    new_case(fc)
    text = ui.get("/cases").visible()
    assert "矛盾纠纷" in text and "已登记" in text and "村级" in text
    assert "dispute" not in text and "registered" not in text


def test_list_sorts_by_the_next_due_date(ui: UI, fc: FieldClient) -> None:
    late = new_case(fc, title="后到期的案件")
    # received three days earlier (typed): due three days sooner
    soon = fc.new_case(case_values(title="先到期的案件", received_at="2026-11-19T09:00:00+08:00"), [])
    text = ui.get("/cases").visible()
    assert text.index("先到期的案件") < text.index("后到期的案件")
    newest_first = ui.get("/cases?sort=received").visible()
    assert newest_first.index("后到期的案件") < newest_first.index("先到期的案件")
    assert late and soon


def test_a_long_caseload_pages_so_every_case_can_be_reached(ui: UI, fc: FieldClient) -> None:
    for i in range(230):
        new_case(fc, title=f"案件{i:03d}号", category="complaint" if i % 2 else "dispute",
                 subject="wage_arrears" if i % 2 else "neighbour")
    first = ui.get("/cases").visible()
    assert "共 230 件" in first and "第 1 页，共 3 页" in first and "下一页" in first
    seen: set[str] = set()
    for n in (1, 2, 3):
        text = ui.get(f"/cases?page={n}").visible()
        seen |= {f"案件{i:03d}号" for i in range(230) if f"案件{i:03d}号" in text}
    assert len(seen) == 230
    last = ui.get("/cases?page=99").visible()  # past the end: the last page
    assert "第 3 页，共 3 页" in last and "上一页" in last
    filtered = ui.get("/cases?category=complaint&page=2").visible()
    assert "共 115 件" in filtered and "第 2 页，共 2 页" in filtered


def test_an_ignored_filter_value_does_not_break_the_list(ui: UI, fc: FieldClient) -> None:
    new_case(fc)
    page = ui.get("/cases?state=bogus&level=<script>")
    assert page.status == 200 and "宅基地边界纠纷" in page.visible()


# ---- registering a case ----


def test_register_form_offers_two_parties(ui: UI, fc: FieldClient) -> None:
    page = ui.get("/cases/new")
    assert page.status == 200
    assert page.value("p0-role") == "petitioner" and page.value("p1-role") == "respondent"
    assert page.value("received_at") == "2026-11-22T10:00"


def test_register_a_case_with_two_parties(ui: UI, fc: FieldClient) -> None:
    page = ui.post("/cases/new", register_form(tags=["group", "key"]))
    assert page.status == 302
    case_id = page.location.rsplit("/", 1)[1]
    detail = fc.case_detail(case_id, unmask=True)
    assert detail["case"]["title"] == "宅基地边界纠纷" and detail["case"]["people_count"] == 2
    assert sorted(detail["case"]["tags"]) == ["group", "key"]
    parties = {p["name"]: p for p in detail["parties"]}
    assert set(parties) == {"张建国", "李秀英"}
    assert parties["张建国"]["id_number"] == GOOD_ID and parties["李秀英"]["phone"] == "0571-12345678"
    shown = ui.get(page.location, follow_redirects=False)
    assert "案件已登记" in shown.visible()
    assert fc.pending_count() == 3


def test_invalid_id_number_is_shown_inline_in_chinese_and_typed_values_are_kept(ui: UI, fc: FieldClient) -> None:
    page = ui.post("/cases/new", register_form(**{"p0-id_number": BAD_ID}))
    assert page.status == 422
    error = page.error("p0-id_number")
    assert error and CJK.search(error) and "校验" in error
    assert "没有保存" in page.visible()
    assert page.value("title") == "宅基地边界纠纷"
    assert page.value("summary") == "张建国反映邻居李秀英建房越界。"
    assert page.value("category") == "dispute" and page.value("subject") == "neighbour"
    assert page.value("p0-name") == "张建国" and page.value("p0-id_number") == BAD_ID
    assert page.value("p1-name") == "李秀英" and page.value("p1-phone") == "0571-12345678"
    assert fc.list_cases() == [] and fc.pending_count() == 0


def test_register_names_each_missing_required_field(ui: UI, fc: FieldClient) -> None:
    page = ui.post("/cases/new", register_form(title="", category="", **{"p1-role": ""}))
    assert page.status == 422
    errors = page.errors()
    assert set(errors) == {"title", "category", "p1-role"}
    assert all(CJK.search(m) for m in errors.values())
    assert page.value("p0-name") == "张建国"


def test_register_needs_at_least_one_party(ui: UI, fc: FieldClient) -> None:
    form = {k: v for k, v in register_form().items() if not k.startswith("p")}
    page = ui.post("/cases/new", form)
    assert page.status == 422 and "请至少登记一位当事人" in page.visible()


def test_add_party_button_adds_a_third_block_and_keeps_what_was_typed(ui: UI, fc: FieldClient) -> None:
    page = ui.post("/cases/new", register_form(add_party="1"))
    assert page.status == 200
    assert page.value("n_parties") == "3" and page.value("p2-name") == ""
    assert page.value("p0-name") == "张建国" and page.value("title") == "宅基地边界纠纷"
    assert fc.pending_count() == 0
    done = ui.post("/cases/new", register_form(n_parties="3", **{"p2-role": "other", "p2-name": "王五"}))
    assert done.status == 302
    assert len(fc.case_detail(done.location.rsplit("/", 1)[1])["parties"]) == 3


# ---- the case page ----


def _full_case(fc: FieldClient) -> str:
    cid = new_case(fc)
    fc.add_record("visit", cid, {"kind": "home", "visited_at": "2026-11-22T09:30:00+08:00",
                                 "visitor": "wangli", "summary": "上门了解情况"})
    fc.transition(cid, "accept")
    fc.add_record("notice", cid, {"kind": "acceptance", "served_at": "2026-11-22"})
    parties = [p["id"] for p in fc.case_detail(cid)["parties"]]
    fc.add_record("mediation", cid, {"kind": "people", "mediator": "wangli", "held_at": "2026-11-22T14:00:00+08:00",
                                     "outcome": "agreement", "agreement_form": "written", "parties": parties,
                                     "terms": "按原界址重新立界", "performance": "十日内立界"})
    fc.add_record("note", cid, {"text": "已电话回访", "written_at": "2026-11-22T16:00:00+08:00"})
    return cid


def test_case_page_shows_the_whole_timeline(ui: UI, fc: FieldClient) -> None:
    cid = _full_case(fc)
    stamp = fc.replica.fold_state("case", cid)["win"]["title"][0]
    fc.edit("case", cid, {"title": "宅基地纠纷（甲）"})
    fc.record([{"entity": "case", "entity_id": cid, "case_id": cid, "kind": "set",
                "values": {"title": "宅基地纠纷（乙）"}, "base": {"title": stamp}}])
    page = ui.get(f"/cases/{cid}")
    assert page.status == 200
    text = page.visible()
    for expected in ("登记案件", "走访记录", "上门了解情况", "流转：受理", "告知书/文书", "受理告知书",
                     "调解记录", "按原界址重新立界", "十日内立界", "张建国、李秀英", "备注", "已电话回访",
                     "待处理的冲突", "在两台设备上被改成了不同的值"):
        assert expected in text, expected
    assert text.index("登记案件") < text.index("走访记录") < text.index("调解记录")
    for code in ("home", "acceptance", "people", "agreement", "written"):
        assert f" {code} " not in f" {text} "


def test_case_page_masks_id_numbers_and_phones_unless_asked(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    masked = ui.get(f"/cases/{cid}")
    assert GOOD_ID not in masked.text and "13812345678" not in masked.text
    assert GOOD_ID[:4] + "*" * 10 + GOOD_ID[-4:] in masked.text and "138****5678" in masked.text
    assert "显示完整身份证号和电话" in masked.visible()
    shown = ui.get(f"/cases/{cid}?show=1")
    assert GOOD_ID in shown.text and "13812345678" in shown.text
    assert "隐藏身份证号和电话" in shown.visible()
    assert GOOD_ID not in ui.get(f"/cases/{cid}").text  # the toggle is per view


def test_an_accusation_case_is_marked_confidential(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc, category="accusation", subject="official_conduct")
    assert "不得向被检举控告人透露" in ui.get(f"/cases/{cid}").visible()


# ---- record forms: success and error paths ----

RECORDS: dict[str, tuple[dict[str, Any], dict[str, Any], str, tuple[str, str]]] = {
    # entity: (valid form, changes that make it invalid, the field in error, a kept (field, value))
    "visit": ({"kind": "home", "visited_at": "2026-11-22T09:30", "visitor": "wangli", "place": "张家",
               "summary": "了解情况"}, {"visited_at": "明天上午"}, "visited_at", ("place", "张家")),
    "mediation": ({"kind": "people", "mediator": "wangli", "held_at": "2026-11-22T14:00", "place": "村调解室",
                   "outcome": "agreement", "agreement_form": "oral", "terms": "赔偿两千元",
                   "performance": "十日内付清", "performance_due": "2026-12-02", "facts": "越界建房"},
                  {"agreement_form": ""}, "agreement_form", ("terms", "赔偿两千元")),
    "notice": ({"kind": "acceptance", "served_at": "2026-11-22", "number": "东受〔2026〕1号"},
               {"served_at": "2026-13-45"}, "served_at", ("number", "东受〔2026〕1号")),
    "note": ({"written_at": "2026-11-22T16:00", "text": "已电话联系"}, {"text": ""}, "text",
             ("written_at", "2026-11-22T16:00")),
    "evaluation": ({"rating": "basically_satisfied", "evaluated_at": "2026-11-22T17:00", "comment": "基本满意"},
                   {"rating": ""}, "rating", ("comment", "基本满意")),
    "leader_assignment": ({"leader": "王书记", "handler": "李主任", "assigned_at": "2026-11-22",
                           "team": "张三、李四", "plan": "先调查后调解"}, {"leader": ""}, "leader",
                          ("plan", "先调查后调解")),
    "party": ({"role": "other", "name": "王五", "phone": "0571-87654321", "organisation": "东村委"},
              {"phone": "12345"}, "phone", ("name", "王五")),
}


@pytest.mark.parametrize("entity", sorted(RECORDS))
def test_record_form_saves(ui: UI, fc: FieldClient, entity: str) -> None:
    cid = new_case(fc)
    form_page = ui.get(f"/cases/{cid}/{entity}/new")
    assert form_page.status == 200
    valid, _bad, _field, _kept = RECORDS[entity]
    before = fc.pending_count()
    page = ui.post(f"/cases/{cid}/{entity}/new", valid)
    assert page.status == 302, page.errors()
    assert fc.pending_count() == before + 1
    table = {"leader_assignment": "leader_assignments", "party": "parties"}.get(entity, entity + "s")
    rows = fc.case_detail(cid, unmask=True)[table]
    saved = rows[-1]
    if entity == "leader_assignment":
        assert saved["team"] == ["张三", "李四"]
    if entity == "party":
        assert saved["phone"] == "0571-87654321"
    assert "已保存" in ui.get(f"/cases/{cid}").visible()


@pytest.mark.parametrize("entity", sorted(RECORDS))
def test_record_form_errors_are_inline_in_chinese_and_keep_what_was_typed(ui: UI, fc: FieldClient, entity: str) -> None:
    cid = new_case(fc)
    valid, bad, field, (kept_field, kept_value) = RECORDS[entity]
    before = fc.pending_count()
    page = ui.post(f"/cases/{cid}/{entity}/new", {**valid, **bad})
    assert page.status == 422
    error = page.error(field)
    assert error and CJK.search(error), page.errors()
    assert page.value(kept_field) == kept_value
    assert fc.pending_count() == before


def test_mediation_form_lists_the_case_parties_and_keeps_the_ticks(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    ids = [p["id"] for p in fc.case_detail(cid)["parties"]]
    page = ui.get(f"/cases/{cid}/mediation/new")
    assert "张建国（信访人/申请人）" in page.visible() and "李秀英（被反映人/被申请人）" in page.visible()
    form = {**RECORDS["mediation"][0], "parties": ids, "terms": ""}
    again = ui.post(f"/cases/{cid}/mediation/new", form)
    assert again.status == 422 and again.error("terms")
    assert sorted(again.checked("parties")) == sorted(ids)
    done = ui.post(f"/cases/{cid}/mediation/new", {**form, "terms": "各让三尺"})
    assert done.status == 302
    assert sorted(fc.case_detail(cid)["mediations"][0]["parties"]) == sorted(ids)


def test_mediation_refuses_a_party_of_another_case(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    page = ui.post(f"/cases/{cid}/mediation/new", {**RECORDS["mediation"][0], "parties": ["f" * 32]})
    assert page.status == 422 and page.error("parties")


def test_an_unknown_record_type_is_a_404(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    assert ui.get(f"/cases/{cid}/case/new").status == 404
    assert ui.get(f"/cases/{cid}/spaceship/new").status == 404


# ---- transitions ----


def _offered(page: Page) -> list[str]:
    return page.ids("act-")


@pytest.mark.parametrize(
    "steps",
    [(), ("accept",), ("accept", "start"), ("accept", "start", "close_by_agreement"), ("reject",)],
    ids=["registered", "accepted", "in_handling", "closed", "not_accepted"],
)
def test_only_the_transitions_the_state_machine_allows_are_offered(
    ui: UI, fc: FieldClient, steps: tuple[str, ...]
) -> None:
    cid = new_case(fc)
    for step in steps:
        fc.transition(cid, step)
    row = fc.replica.get("case", cid)
    expected = lifecycle.actions_for(row, fc.level)
    assert expected
    assert _offered(ui.get(f"/cases/{cid}")) == expected


def test_a_case_reported_up_offers_no_transitions_here(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    fc.report_up(cid, "t01")
    page = ui.get(f"/cases/{cid}")
    assert _offered(page) == []
    assert "此案件已上报至乡镇级办理，本机不能再流转" in page.visible()


def test_a_transition_not_allowed_is_refused_and_changes_nothing(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    before = fc.pending_count()
    page = ui.post(f"/cases/{cid}/transition/close", {})
    assert page.status == 302
    assert "案件当前状态不允许这项流转" in ui.get(page.location).visible()
    assert fc.pending_count() == before and fc.replica.get("case", cid)["state"] == "registered"
    assert ui.get(f"/cases/{cid}/transition/bogus").status == 302


def test_accept_then_start(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    assert ui.get(f"/cases/{cid}/transition/accept").status == 200
    assert ui.post(f"/cases/{cid}/transition/accept", {"reason": "属于本村调解范围"}).status == 302
    assert ui.post(f"/cases/{cid}/transition/start", {}).status == 302
    page = ui.get(f"/cases/{cid}")
    assert "办理中" in page.visible() and "属于本村调解范围" in page.visible()


def test_report_up_needs_the_unit_then_hands_the_case_to_the_township(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    form = ui.get(f"/cases/{cid}/transition/escalate")
    assert "上报至（单位代码）" in form.visible() and "乡镇级" in form.visible()
    missing = ui.post(f"/cases/{cid}/transition/escalate", {"to_node": "", "reason": "村里调不下来"})
    assert missing.status == 422
    assert missing.error("to_node") and missing.value("reason") == "村里调不下来"
    done = ui.post(f"/cases/{cid}/transition/escalate", {"to_node": "t01", "reason": "村里调不下来"})
    assert done.status == 302
    row = fc.replica.get("case", cid)
    assert row["level"] == "township" and row["node"] == "t01"
    assert "已完成：上报" in ui.get(f"/cases/{cid}").visible()


def test_a_voided_case_offers_no_step(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    fc.void("case", cid, "重复登记")
    assert _offered(ui.get(f"/cases/{cid}")) == []
    assert ui.post(f"/cases/{cid}/transition/accept", {}).status == 302
    assert fc.replica.get("case", cid)["state"] == "registered"


def test_decide_asks_for_the_decision_and_extend_for_the_days(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    fc.transition(cid, "accept")
    no_decision = ui.post(f"/cases/{cid}/transition/decide", {"reason": "见意见书"})
    assert no_decision.status == 422 and no_decision.error("decision")
    bad_days = ui.post(f"/cases/{cid}/transition/extend", {"days": "45"})
    assert bad_days.status == 422 and bad_days.error("days") and bad_days.value("days") == "45"
    assert ui.post(f"/cases/{cid}/transition/extend", {"days": "20"}).status == 302
    assert fc.replica.get("case", cid)["extended_days"] == 20
    assert "extend" not in _offered(ui.get(f"/cases/{cid}")), "a case is extended once only"
    again = ui.post(f"/cases/{cid}/transition/extend", {"days": "10"})
    assert again.status == 302 and fc.replica.get("case", cid)["extended_days"] == 20
    assert "不允许" in ui.get(f"/cases/{cid}").visible()
    assert ui.post(f"/cases/{cid}/transition/decide", {"decision": "support"}).status == 302
    assert fc.replica.get("case", cid)["decision"] == "support"


# ---- conflicts ----


def _concurrent_title(fc: FieldClient, cid: str) -> tuple[str, str]:
    stamp = fc.replica.fold_state("case", cid)["win"]["title"][0]
    mine = fc.edit("case", cid, {"title": "甲的改法"})
    (theirs,) = fc.record([{"entity": "case", "entity_id": cid, "case_id": cid, "kind": "set",
                            "values": {"title": "乙的改法"}, "base": {"title": stamp}}])
    assert mine is not None
    return mine.op_id, theirs.op_id


def _open_conflicts(fc: FieldClient, cid: str) -> list[dict[str, Any]]:
    return [c for c in fc.replica.conflicts(case_id=cid) if c["status"] == "open"]


def test_resolve_a_conflict_by_choosing_one_of_the_values(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    mine, theirs = _concurrent_title(fc, cid)
    page = ui.get(f"/cases/{cid}")
    assert "甲的改法" in page.visible() and "乙的改法" in page.visible() and "保留当前值" in page.visible()
    (conflict,) = _open_conflicts(fc, cid)
    assert ui.post(f"/cases/{cid}/conflicts/{conflict['id']}", {"choice": mine}).status == 302
    assert _open_conflicts(fc, cid) == []
    assert fc.case_detail(cid)["case"]["title"] == "甲的改法"
    assert "冲突已处理" in ui.get(f"/cases/{cid}").visible()


def test_resolve_a_conflict_keeping_the_current_value(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    _concurrent_title(fc, cid)
    current = fc.replica.get("case", cid)["title"]
    (conflict,) = _open_conflicts(fc, cid)
    assert ui.post(f"/cases/{cid}/conflicts/{conflict['id']}", {"choice": "keep"}).status == 302
    assert _open_conflicts(fc, cid) == [] and fc.replica.get("case", cid)["title"] == current


def test_resolving_needs_a_choice_that_was_offered(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    _concurrent_title(fc, cid)
    (conflict,) = _open_conflicts(fc, cid)
    page = ui.post(f"/cases/{cid}/conflicts/{conflict['id']}", {"choice": "a" * 32})
    assert page.status == 302 and len(_open_conflicts(fc, cid)) == 1
    gone = ui.post(f"/cases/{cid}/conflicts/{'b' * 64}", {"choice": "keep"})
    assert gone.status == 302 and "已经处理过了" in ui.get(gone.location).visible()


def test_a_refused_transition_is_shown_and_can_be_acknowledged(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    fc.record([{"entity": "case", "entity_id": cid, "case_id": cid, "kind": "transition",
                "values": {"action": "close", "acting_level": "village"}}])
    page = ui.get(f"/cases/{cid}")
    assert "有一项流转未能生效" in page.visible() and "案件当时的状态不允许" in page.visible()
    assert "未生效" in page.visible()
    (conflict,) = _open_conflicts(fc, cid)
    assert ui.post(f"/cases/{cid}/conflicts/{conflict['id']}", {}).status == 302
    assert _open_conflicts(fc, cid) == []


# ---- language ----


def test_english_is_a_link_away_and_chinese_comes_back(ui: UI, fc: FieldClient) -> None:
    cid = new_case(fc)
    zh = ui.get(f"/cases/{cid}")
    assert 'lang="zh-CN"' in zh.text and "English" in zh.visible()
    switch = ui.get(f"/lang/en?next=/cases/{cid}")
    assert switch.status == 302 and switch.location.endswith(f"/cases/{cid}")
    cookie = switch.response.headers["Set-Cookie"]
    assert "minqing_lang=en" in cookie and "SameSite=Strict" in cookie
    en = ui.get(f"/cases/{cid}")
    text = en.visible()
    assert 'lang="en"' in en.text
    assert "My cases" in text and "Civil dispute (mediation)" in text and "Registered" in text
    assert "Report up" in text and "Parties" in text
    bad = ui.post("/cases/new", register_form(**{"p0-id_number": BAD_ID}))
    assert bad.error("p0-id_number") and not CJK.search(bad.error("p0-id_number") or "")
    ui.get("/lang/zh")
    assert "我的案件" in ui.get("/cases").visible()


def test_an_unknown_language_changes_nothing(ui: UI) -> None:
    page = ui.get("/lang/fr?next=/unlock")
    assert page.status == 302 and "Set-Cookie" not in page.response.headers


# ---- documentation ----


def test_every_route_is_listed_in_the_module_docstring(app: Flask) -> None:
    from field_client import web

    def norm(path: str) -> str:
        return re.sub(r"<[^>]+>", "<>", path)

    documented = {norm(p) for p in re.findall(r"^\s+(?:GET|POST)[A-Z ]*\s+(/\S*)", web.__doc__ or "", re.M)}
    routes = {norm(r.rule) for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert routes == documented


# ---- serve ----


def test_serve_refuses_an_address_other_than_this_machine(data_dir: Path) -> None:
    with pytest.raises(InputInvalid):
        serve(str(data_dir), host="0.0.0.0", open_browser=False)


def test_serve_prints_its_address_answers_there_and_stops_on_ctrl_c(data_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    code = "import sys; from field_client.web import serve; serve(sys.argv[1], open_browser=False)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + (proc.stderr.read() if proc.stderr else "")
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(m.group(0) + "unlock", timeout=5) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert "解锁本机" in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

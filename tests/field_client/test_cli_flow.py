"""The CLI's commands doing their work, run in-process through ``main(argv)``."""

from __future__ import annotations

import re
import sys
import types
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from field_client.store import FieldClient
from schema.obligations import CHINA
from tests.field_client.conftest import ID_NUMBER, PASSPHRASE, PHONE, Cli, foreign_set, new_case

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_a_case_goes_from_registration_through_mediation_and_is_reported_up(cli: Cli) -> None:
    case = new_case(
        cli,
        "--summary", "邻居把院墙往外挪了半米", "--people-count", "2",
        "--party", f"role=信访人,name=张三丰,id_number={ID_NUMBER},phone={PHONE},address=东村3组,12号",
        "--party", "角色=被申请人,姓名=李四",
    )
    assert HEX32.fullmatch(case["id"])
    no = case["case_no"]
    assert cli("visit", "add", no, "--kind", "上门", "--place", "张家", "--summary", "双方同意调解").code == 0
    r = cli("mediation", "add", no, "--kind", "人民调解", "--outcome", "达成协议", "--form", "written",
            "--terms", "李四把院墙退回原处", "--performance", "李四自行拆除重砌", "--due", "2026-12-31")
    assert r.code == 0, r.err
    assert cli("notice", "add", no, "--kind", "受理告知书", "--served", "2026-11-22", "--number", "东村调1号").code == 0
    assert cli("case", "transition", no, "受理").code == 0
    r = cli("case", "transition", no, "start")
    assert r.code == 0 and "办理中" in r.out

    listing = cli("case", "list")
    assert listing.code == 0
    detail = cli("case", "show", no, "--json", "--unmask").json()
    due = detail["obligations"][0]
    assert due["rule"] == "village_handling" and due["start_event"] == "received" and due["state"] == "pending"
    row = next(line for line in listing.out.splitlines() if no in line)
    assert due["due"][:10] in row and "村级办理时限(7日)" in row and "办理中" in row

    assert detail["ok"] is True
    assert detail["case"]["state"] == "in_handling"
    assert detail["case"]["people_count"] == 2
    assert detail["case"]["summary"] == "邻居把院墙往外挪了半米"
    parties = {p["name"]: p for p in detail["parties"]}
    assert parties["张三丰"]["role"] == "petitioner"
    assert parties["张三丰"]["id_number"] == ID_NUMBER and parties["张三丰"]["phone"] == PHONE
    assert parties["张三丰"]["address"] == "东村3组,12号"
    assert parties["李四"]["role"] == "respondent"
    (visit,) = detail["visits"]
    assert visit["kind"] == "home" and visit["place"] == "张家" and visit["summary"] == "双方同意调解"
    (mediation,) = detail["mediations"]
    assert mediation["outcome"] == "agreement" and mediation["agreement_form"] == "written"
    assert mediation["terms"] == "李四把院墙退回原处" and mediation["performance"] == "李四自行拆除重砌"
    assert mediation["performance_due"] == "2026-12-31"
    (notice,) = detail["notices"]
    assert notice["kind"] == "acceptance" and notice["served_at"] == "2026-11-22" and notice["number"] == "东村调1号"
    assert "escalate" in detail["allowed_actions"]
    kinds = [(op["entity"], op["kind"]) for op in detail["timeline"]]
    assert kinds.count(("party", "create")) == 2
    assert [op["values"]["action"] for op in detail["timeline"] if op["kind"] == "transition"] == ["accept", "start"]

    r = cli("case", "report-up", no, "--to-node", "T01", "--reason", "涉及多个村")
    assert r.code == 0, r.err
    after = cli("case", "show", no, "--json").json()
    assert after["case"]["level"] == "township" and after["case"]["node"] == "T01"
    assert after["allowed_actions"] == []  # a village laptop can no longer move it
    assert "乡镇级" in cli("case", "show", no).out


def test_write_commands_print_the_new_id_with_json(cli: Cli) -> None:
    case = new_case(cli)
    ids = {}
    for argv in (
        ("visit", "add", case["case_no"], "--kind", "walk"),
        ("note", "add", case["case_no"], "--text", "记一笔"),
        ("evaluation", "add", case["case_no"], "--rating", "基本满意"),
        ("leader", "assign", case["case_no"], "--leader", "李书记", "--handler", "王力", "--team", "张明", "--team", "刘芳"),
        ("notice", "add", case["case_no"], "--kind", "acceptance", "--served", "2026/11/22"),
    ):
        r = cli("--json", *argv)
        assert r.code == 0, r.out
        body = r.json()
        assert body["ok"] is True and HEX32.fullmatch(body["id"]) and body["case_id"] == case["id"]
        ids[argv[0]] = body["id"]
    detail = cli("case", "show", case["id"], "--json").json()
    assert detail["visits"][0]["id"] == ids["visit"]
    assert detail["notes"][0]["id"] == ids["note"] and detail["notes"][0]["text"] == "记一笔"
    assert detail["evaluations"][0]["rating"] == "basically_satisfied"
    assert detail["leader_assignments"][0]["team"] == ["刘芳", "张明"]
    assert detail["notices"][0]["served_at"] == "2026-11-22"


def test_case_list_puts_the_soonest_deadline_first(cli: Cli) -> None:
    later = new_case(cli, title="后到期")
    earlier_received = (datetime.now(CHINA) - timedelta(days=3)).strftime("%Y-%m-%d %H:%M")
    sooner = new_case(cli, "--received", earlier_received, title="先到期")
    rows = cli("--json", "case", "list").json()["cases"]
    assert [r["id"] for r in rows] == [sooner["id"], later["id"]]
    assert rows[0]["next_due"] < rows[1]["next_due"]
    text = cli("case", "list").out
    assert text.index("先到期") < text.index("后到期")


def test_case_list_filters_by_state_category_and_level_in_either_language(cli: Cli) -> None:
    a = new_case(cli, title="甲")
    b = new_case(cli, title="乙")
    assert cli("case", "transition", b["case_no"], "accept").code == 0
    for state in ("已受理", "accepted"):
        rows = cli("--json", "case", "list", "--state", state).json()["cases"]
        assert [r["id"] for r in rows] == [b["id"]]
    assert {r["id"] for r in cli("--json", "case", "list", "--level", "村级").json()["cases"]} == {a["id"], b["id"]}
    assert cli("--json", "case", "list", "--category", "complaint").json()["cases"] == []
    assert cli("case", "list", "--state", "nonsense").code == 2


def test_an_empty_laptop_lists_no_cases_and_says_how_to_add_one(cli: Cli) -> None:
    r = cli("case", "list")
    assert r.code == 0 and "case new" in r.out


def test_enum_values_are_accepted_by_value_and_by_chinese_label(cli: Cli) -> None:
    zh = new_case(cli)
    r = cli("--json", "case", "new", "--title", "t", "--category", "dispute", "--subject", "neighbour",
            "--channel", "visit")
    en = r.json()
    rows = {x["id"]: x for x in cli("--json", "case", "list").json()["cases"]}
    assert rows[zh["id"]]["category"] == rows[en["id"]]["category"] == "dispute"
    assert rows[zh["id"]]["subject"] == rows[en["id"]]["subject"] == "neighbour"


def test_edit_changes_fields_by_name_or_label_and_says_when_nothing_changed(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("case", "edit", case["case_no"], "title=宅基地院墙纠纷", "人数=3")
    assert r.code == 0 and "事由" in r.out and "人数" in r.out
    row = cli("case", "show", case["id"], "--json").json()["case"]
    assert row["title"] == "宅基地院墙纠纷" and row["people_count"] == 3
    again = cli("--json", "case", "edit", case["case_no"], "title=宅基地院墙纠纷")
    assert again.code == 0 and again.json()["op_id"] is None


def test_edit_refuses_unknown_fields_and_lifecycle_fields(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("case", "edit", case["case_no"], "colour=red")
    assert r.code == 2 and "colour" in r.err
    r = cli("case", "edit", case["case_no"], "level=county")
    assert r.code == 2 and "办理层级" in r.err and "不能直接修改" in r.err
    r = cli("case", "edit", case["case_no"], "people_count=many")
    assert r.code == 2 and "人数" in r.err and "整数" in r.err
    assert cli("case", "show", case["id"], "--json").json()["case"]["level"] == "village"


def test_tags_are_added_and_removed_by_label(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("case", "tag", case["case_no"], "--add", "重点关注", "--add", "group")
    assert r.code == 0 and "重点关注" in r.out and "群体访" in r.out
    assert cli("case", "tag", case["case_no"], "--remove", "群体访").code == 0
    assert cli("case", "show", case["id"], "--json").json()["case"]["tags"] == ["key"]
    r = cli("case", "tag", case["case_no"], "--remove", "hard")
    assert r.code == 2 and "疑难复杂" in r.err


def test_a_voided_case_stays_but_leaves_the_default_list(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("case", "void", case["case_no"], "--reason", "重复登记")
    assert r.code == 0
    assert cli("--json", "case", "list").json()["cases"] == []
    rows = cli("--json", "case", "list", "--all").json()["cases"]
    assert [x["id"] for x in rows] == [case["id"]] and rows[0]["voided"] == 1
    shown = cli("case", "show", case["case_no"])
    assert "已作废" in shown.out and "重复登记" in shown.out
    assert cli("case", "void", case["case_no"], "--reason", "再来一次").code == 2
    step = cli("case", "transition", case["case_no"], "accept")
    assert step.code == 2 and "已作废" in step.err and "重复登记" in step.err
    assert cli("case", "show", case["case_no"], "--json").json()["case"]["state"] == "registered"


def test_transition_extras_are_checked_before_anything_is_recorded(cli: Cli) -> None:
    case = new_case(cli)
    no = case["case_no"]
    r = cli("case", "transition", no, "route")
    assert r.code == 2 and "--to-node" in r.err
    assert cli("case", "transition", no, "accept").code == 0
    r = cli("case", "transition", no, "extend", "--days", "45")
    assert r.code == 2 and "30" in r.err
    assert cli("case", "transition", no, "extend", "--days", "10").code == 0
    again = cli("--json", "case", "transition", no, "extend", "--days", "10")
    assert again.code == 2 and "extend" not in again.json()["error"]["details"]["allowed"]
    assert cli("case", "transition", no, "decide").code == 2
    r = cli("--json", "case", "transition", no, "出具处理意见", "--decision", "支持")
    assert r.code == 0 and r.json()["state"] == "decided"
    detail = cli("case", "show", no, "--json").json()
    assert detail["case"]["decision"] == "support"
    assert [op["values"]["action"] for op in detail["timeline"] if op["kind"] == "transition"] == ["accept", "extend", "decide"]


def test_mediation_agreement_needs_its_form(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("mediation", "add", case["case_no"], "--kind", "人民调解", "--outcome", "达成协议")
    assert r.code == 2 and "协议形式" in r.err
    assert cli("case", "show", case["id"], "--json").json()["mediations"] == []


def test_mediation_without_agreement_reminds_to_tell_other_remedies(cli: Cli) -> None:
    case = new_case(cli)
    r = cli("mediation", "add", case["case_no"], "--kind", "people", "--outcome", "未达成协议")
    assert r.code == 0 and "救济" in r.err
    r = cli("mediation", "add", case["case_no"], "--kind", "people", "--outcome", "no_agreement", "--remedies-told")
    assert r.code == 0 and "救济" not in r.err


def test_visit_time_is_read_as_china_time_and_defaults_to_now(cli: Cli) -> None:
    case = new_case(cli)
    assert cli("visit", "add", case["case_no"], "--kind", "回访", "--at", "2026年11月20日 9:30").code == 0
    assert cli("visit", "add", case["case_no"], "--kind", "回访").code == 0
    visits = cli("case", "show", case["id"], "--json").json()["visits"]
    times = sorted(v["visited_at"] for v in visits)
    assert times[0] == "2026-11-20T09:30:00+08:00"
    assert abs(datetime.fromisoformat(times[1]) - datetime.now(CHINA)) < timedelta(minutes=5)
    r = cli("visit", "add", case["case_no"], "--kind", "回访", "--at", "昨天")
    assert r.code == 2 and "时间" in r.err


def test_status_counts_pending_ops_cases_and_says_it_never_synced(cli: Cli) -> None:
    new_case(cli, "--party", "role=petitioner,name=张三")
    status = cli("--json", "status").json()
    assert status["pending_ops"] == 2 and status["cases"] == 1 and status["open_conflicts"] == 0
    assert status["node"] == "V001" and status["level"] == "village" and status["user"] == "wangli"
    assert status["last_sync"] is None and len(status["device_id"]) == 16
    text = cli("status").out
    assert "从未同步" in text and "2 条" in text and status["device_id"] in text


def test_english_is_available_for_messages(cli: Cli) -> None:
    r = cli("--lang", "en", "case", "show", "nope")
    assert r.code == 2 and "No case" in r.err
    case = new_case(cli)
    r = cli("--lang", "en", "case", "show", case["case_no"])
    assert r.code == 0 and "Deadlines" in r.out and "registered" in r.out


def test_a_concurrent_edit_is_listed_with_both_values_and_resolved_by_choice(cli: Cli, cli_data: Path) -> None:
    case = new_case(cli, title="宅基地纠纷")
    assert cli("case", "edit", case["case_no"], "title=宅基地院墙纠纷").code == 0
    foreign_set(cli_data, "case", case["id"], case["id"], "title", "院墙纠纷（赵）")
    listed = cli("conflict", "list")
    assert "宅基地院墙纠纷" in listed.out and "院墙纠纷（赵）" in listed.out and "事由" in listed.out
    (conflict,) = cli("--json", "conflict", "list").json()["conflicts"]
    assert conflict["case_no"] == case["case_no"] and conflict["field"] == "title"
    assert cli("--json", "status").json()["open_conflicts"] == 1
    shown = cli("case", "show", case["case_no"])
    assert conflict["id"][:8] in shown.out
    assert cli("conflict", "resolve", conflict["id"][:8]).code == 2  # must say how
    r = cli("conflict", "resolve", conflict["id"][:8], "--value", "宅基地院墙纠纷（已核实）")
    assert r.code == 0, r.err
    assert cli("--json", "conflict", "list").json()["conflicts"] == []
    assert cli("case", "show", case["id"], "--json").json()["case"]["title"] == "宅基地院墙纠纷（已核实）"
    assert cli("conflict", "resolve", conflict["id"][:8], "--keep-current").code == 2  # no longer open


def test_keep_current_resolves_with_the_value_shown_now(cli: Cli, cli_data: Path) -> None:
    case = new_case(cli, "--people-count", "2")
    foreign_set(cli_data, "case", case["id"], case["id"], "people_count", 5)
    (conflict,) = cli("--json", "conflict", "list").json()["conflicts"]
    shown_now = cli("case", "show", case["id"], "--json").json()["case"]["people_count"]
    assert cli("conflict", "resolve", conflict["id"], "--keep-current").code == 0
    assert cli("case", "show", case["id"], "--json").json()["case"]["people_count"] == shown_now
    assert cli("--json", "status").json()["open_conflicts"] == 0


def test_serve_calls_the_web_ui_with_its_options(cli: Cli, cli_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("field_client.web")
    fake.serve = lambda data, host="127.0.0.1", port=0, open_browser=True: calls.append((data, host, port, open_browser))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "field_client.web", fake)
    assert cli("serve", "--port", "8765", "--no-browser").code == 0
    assert calls == [(str(cli_data), "127.0.0.1", 8765, False)]


def test_serve_says_so_when_the_web_ui_is_missing(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "field_client.web", None)
    r = cli("serve", "--no-browser")
    assert r.code == 2 and "网页" in r.err and "Traceback" not in r.err
    r = cli("--json", "serve")
    assert r.code == 2 and r.json()["error"]["code"] == "client.web_missing"


def test_status_shows_the_last_sync_the_sync_agent_recorded(cli: Cli, cli_data: Path) -> None:
    when = datetime(2026, 11, 21, 16, 30, tzinfo=CHINA)
    with FieldClient.open(cli_data, PASSPHRASE) as c:
        c._set_meta("last_sync_ms", str(int(when.timestamp() * 1000)))
    status = cli("--json", "status").json()
    assert status["last_sync"] == "2026-11-21T16:30:00+08:00"
    assert "2026-11-21 16:30" in cli("status").out

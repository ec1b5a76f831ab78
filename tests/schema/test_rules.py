"""The county's rules file: the default equals DOMAIN.md, a bad file is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from schema.obligations import case_status
from schema.rules import (
    RULE_DEFS,
    RulesInvalid,
    default_rules,
    default_rules_text,
    load_rules_file,
    parse_rules,
)
from tests.casebuild import CaseBuilder, ms

# DOMAIN.md "Deadlines", row by row: days, counted, duty/window, statutory
DOMAIN = {
    "register_route": (15, "calendar", "duty", True),
    "receipt_notice": (15, "calendar", "duty", True),
    "objection_window": (5, "working", "window", True),
    "handle_decide": (60, "calendar", "duty", True),
    "review_request_window": (30, "calendar", "window", True),
    "review_decide": (30, "calendar", "duty", True),
    "rereview_request_window": (30, "calendar", "window", True),
    "rereview_decide": (30, "calendar", "duty", True),
    "judicial_confirmation_window": (30, "calendar", "window", True),
    "mediation_conclude": (30, "calendar", "duty", False),
    "simplified_accept": (3, "working", "duty", False),
    "simplified_answer": (10, "working", "duty", False),
    "village_handling": (7, "calendar", "duty", False),
    "township_handling": (15, "calendar", "duty", False),
    "follow_up": (15, "calendar", "duty", False),
    "leader_progress": (7, "calendar", "duty", False),
}


def test_the_catalogue_is_domain_mds_table() -> None:
    assert set(RULE_DEFS) == set(DOMAIN)
    for rid, (days, counted, kind, statutory) in DOMAIN.items():
        d = RULE_DEFS[rid]
        assert (d.days, d.counted, d.kind, d.statutory) == (days, counted, kind, statutory), rid
    assert {r for r, d in RULE_DEFS.items() if d.escalates} == {"village_handling", "township_handling"}


def test_the_default_file_parses_and_sets_every_figure_at_its_domain_default() -> None:
    rules = default_rules()
    assert rules.county == "示范县"
    for rid, (days, counted, _, _) in DOMAIN.items():
        r = rules.rule(rid)
        assert (r.days, r.counted, r.enabled) == (days, counted, True), rid
    assert (rules.blue_within_days, rules.yellow_within_days, rules.red_overdue_days, rules.group_size) == (7, 3, 15, 5)
    assert rules.backlog_open_past == ("handle_decide", "mediation_conclude")
    assert rules.backlog_reopened_after_final is True
    assert (rules.grace_hours, rules.warn_before_days, rules.warning_notice_after_days) == (72, 3, 15)
    assert rules.reminder_letter is True
    assert rules.max_skew_minutes == 30
    assert rules.text == default_rules_text()
    assert not rules.calendar.extra_holidays and not rules.calendar.extra_workdays


def test_every_rule_in_the_catalogue_has_a_table_in_the_default_file() -> None:
    text = default_rules_text()
    for rid in RULE_DEFS:
        assert f"[rules.{rid}]" in text


def test_an_empty_file_means_the_defaults() -> None:
    empty = parse_rules("")
    default = default_rules()
    assert {k: (r.days, r.enabled) for k, r in empty.rules.items()} == {
        k: (r.days, r.enabled) for k, r in default.rules.items()}


def test_a_rules_file_is_read_from_disk_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_text("[rules.village_handling]\ndays = 5\n", encoding="utf-8")
    assert load_rules_file(p).rule("village_handling").days == 5
    with pytest.raises(RulesInvalid) as exc:
        load_rules_file(tmp_path / "absent.toml")
    assert exc.value.code == "rules.invalid"
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules.handle_decide]\ndays = 90\n", encoding="utf-8")
    with pytest.raises(RulesInvalid) as exc:
        load_rules_file(bad)
    assert str(exc.value).startswith("bad.toml:2: ")


# ---- refusals, each naming its line ----

REFUSALS = [
    ("statutory-duty-lengthened",
     '[county]\nname = "甲县"\n\n[rules.handle_decide]\ndays = 90\n', 5, "60"),
    ("statutory-duty-lengthened-by-one",
     "[rules.register_route]\ndays = 16\n", 2, "15"),
    ("petitioner-window-shortened",
     "[rules.review_request_window]\ndays = 20\n", 2, "30"),
    ("petitioner-window-lengthened",
     "[rules.judicial_confirmation_window]\ndays = 31\n", 2, "30"),
    ("working-day-window-changed",
     "[rules.objection_window]\ndays = 4\n", 2, "5"),
    ("statutory-rule-disabled",
     "[rules.handle_decide]\ndays = 60\nenabled = false\n", 3, "不能停用"),
    ("unknown-key-in-a-rule",
     "[rules.village_handling]\ndays = 7\ndayz = 5\n", 3, "dayz"),
    ("unknown-rule",
     "[colours]\nblue_within_days = 7\n\n[rules.village_handlin]\ndays = 7\n", 4, "village_handlin"),
    ("unknown-key-in-colours",
     "[colours]\nblue_within_days = 7\norange_days = 1\n", 3, "orange_days"),
    ("syntax-error",
     "[colours]\nblue_within_days = 7\nyellow_within_days = \n", 3, "语法"),
    ("unclosed-header",
     "[county]\nname = \"x\"\n[rules.village_handling\ndays = 7\n", 3, "语法"),
    ("wrong-type-string",
     "[colours]\n\nblue_within_days = \"7\"\n", 3, "整数"),
    ("wrong-type-float",
     "[rules.village_handling]\ndays = 7.5\n", 2, "整数"),
    ("wrong-type-bool-as-days",
     "[rules.village_handling]\ndays = true\n", 2, "整数"),
    ("wrong-type-enabled",
     "[rules.village_handling]\nenabled = \"no\"\n", 2, "true"),
    ("days-zero",
     "[rules.follow_up]\ndays = 0\n", 2, "0"),
    ("yellow-above-blue",
     "[colours]\nblue_within_days = 2\nyellow_within_days = 3\n", 3, "yellow"),
    ("extra-holidays-not-dates",
     "[calendar]\nextra_holidays = [\"2026-12-31\"]\n", 2, "extra_holidays"),
    ("extra-holidays-datetimes",
     "[calendar]\n\nextra_holidays = [2026-12-31T00:00:00]\n", 3, "extra_holidays"),
    ("extra-workdays-not-a-list",
     "[calendar]\nextra_workdays = 2026-12-31\n", 2, "extra_workdays"),
    ("a-day-both-holiday-and-workday",
     "[calendar]\nextra_holidays = [2026-06-01]\nextra_workdays = [2026-06-01]\n", 3, "2026-06-01"),
    ("backlog-names-a-window",
     "[backlog]\nopen_past = [\"review_request_window\"]\n", 2, "review_request_window"),
    ("rule-not-a-table",
     "[rules]\nhandle_decide = 90\n", 2, "handle_decide"),
    ("clock-skew-zero",
     "[clock]\nmax_skew_minutes = 0\n", 2, "max_skew_minutes"),
    ("county-name-not-text",
     "[county]\nname = 3\n", 2, "name"),
    ("unknown-top-level-key",
     "foo = 1\n", 1, "foo"),
]


@pytest.mark.parametrize(("text", "line", "says"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_bad_file_is_refused_naming_its_line_and_reason(text: str, line: int, says: str) -> None:
    with pytest.raises(RulesInvalid) as exc:
        parse_rules(text, source="甲县.toml")
    err = exc.value
    assert err.code == "rules.invalid"
    assert err.details["line"] == line
    assert str(err).startswith(f"甲县.toml:{line}: ")
    assert says in str(err)


# the same file, written in other valid TOML forms or with a misspelt table: the line is lost
LOST_LINES = [
    ("unknown-table-misspelt", "[county]\nname = \"x\"\n\n[colors]\nblue_within_days = 7\n", 4),
    ("inline-table", "[county]\nname = \"x\"\n[rules]\nhandle_decide = { days = 90 }\n", 4),
    ("dotted-key", "[county]\nname = \"x\"\n[rules]\nhandle_decide.days = 90\n", 4),
]


@pytest.mark.parametrize(("text", "line"), [r[1:] for r in LOST_LINES], ids=[r[0] for r in LOST_LINES])
def test_a_refusal_names_its_line_whatever_the_toml_form(text: str, line: int) -> None:
    with pytest.raises(RulesInvalid) as exc:
        parse_rules(text, source="c.toml")
    assert exc.value.details["line"] == line
    assert str(exc.value).startswith(f"c.toml:{line}: ")


# ---- what a county may set ----

@pytest.mark.parametrize(
    "text",
    [
        "[rules.handle_decide]\ndays = 45\n",  # a statutory duty shortened
        "[rules.register_route]\ndays = 10\n",
        "[rules.village_handling]\ndays = 30\n",  # a local limit lengthened
        "[rules.leader_progress]\nenabled = false\n",  # a local rule disabled
        "[colours]\nblue_within_days = 3\nyellow_within_days = 3\n",  # yellow equal to blue
        "[calendar]\nextra_holidays = [2026-12-31]\nextra_workdays = [2026-06-06]\n",
        '[rules."handle_decide"]\ndays = 60\n',  # a quoted table name
    ],
    ids=["statutory-duty-shortened", "register-route-shortened", "local-lengthened", "local-disabled",
         "yellow-equals-blue", "calendar-days", "quoted-table-name"],
)
def test_a_county_may_shorten_a_statutory_duty_and_set_its_local_rules(text: str) -> None:
    parse_rules(text)


def village_case() -> CaseBuilder:
    b = CaseBuilder(level="village", node="330102101")
    b.create("2026-03-02T10:00:00+08:00")
    return b


def test_a_county_that_shortens_village_handling_to_five_gets_due_dates_five_days_out() -> None:
    rules = parse_rules("[rules.village_handling]\ndays = 5\n")
    b = village_case()
    st = case_status(b.case_id, b.ops, rules, ms("2026-03-03T00:00:00+08:00"))
    vh = [o for o in st.obligations if o.rule == "village_handling"]
    assert [(o.due, o.zh) for o in vh] == [("2026-03-07T23:59:59+08:00", "村级办理时限(5日)")]
    assert case_status(b.case_id, b.ops, rules, ms("2026-03-08T00:00:00+08:00")).overdue is True


def test_a_county_that_shortens_handle_decide_gets_the_shorter_limit() -> None:
    rules = parse_rules("[rules.handle_decide]\ndays = 45\n")
    b = CaseBuilder(level="county", node="330100")
    b.create("2026-03-02T10:00:00+08:00")
    b.transition("accept", "2026-03-03T09:00:00+08:00")
    st = case_status(b.case_id, b.ops, rules, ms("2026-03-04T00:00:00+08:00"))
    assert [o.due for o in st.obligations if o.rule == "handle_decide"] == ["2026-04-17T23:59:59+08:00"]


def test_a_disabled_local_rule_makes_no_obligation() -> None:
    rules = parse_rules("[rules.village_handling]\nenabled = false\n")
    b = village_case()
    st = case_status(b.case_id, b.ops, rules, ms("2026-03-20T00:00:00+08:00"))
    assert not [o for o in st.obligations if o.rule == "village_handling"]
    assert {o.rule for o in st.obligations} == {"register_route", "receipt_notice"}


def test_county_colour_thresholds_change_the_colour() -> None:
    rules = parse_rules("[colours]\nblue_within_days = 10\nyellow_within_days = 5\n")
    b = village_case()  # village_handling due 3/9 end; register_route and receipt_notice 3/17 end
    for now, default, county in (("2026-03-02T12:00:00+08:00", "green", "blue"),
                                  ("2026-03-05T00:00:00+08:00", "blue", "yellow")):
        assert case_status(b.case_id, b.ops, default_rules(), ms(now)).colour == default
        assert case_status(b.case_id, b.ops, rules, ms(now)).colour == county

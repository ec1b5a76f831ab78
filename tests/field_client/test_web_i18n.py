"""Every string a person reads on the local web UI exists in Chinese (the default) and English.

Three nets: (1) every msgid in the templates and ``field_client/web.py`` has a Chinese
translation with the same placeholders; (2) no template holds literal text outside
``_()``; (3) whole pages, rendered in each language over data in that language, contain
no word of the other language beyond the data itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from flask import Flask

from field_client import web
from field_client.store import FieldClient
from schema import enums
from schema.entities import ENTITIES
from schema.lifecycle import TRANSITIONS
from schema.rules import RULE_DEFS, START_EVENTS
from tests.field_client.web_support import (
    CJK,
    GOOD_ID,
    NODE_NAME,
    UI,
    Clock,
    Page,
    copy_device,
    make_device_template,
)

PKG = Path(web.__file__).parent
TEMPLATES = sorted((PKG / "templates").glob("*.html"))
PO = PKG / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> dict[str, str]:
    """msgid -> where it was found, from web.py and every template."""
    found: dict[str, str] = {}
    for _lineno, msgid, _comments, _context in extract_from_file(
        "python", str(PKG / "web.py"), keywords={"_": None, "N_": None}
    ):
        found[str(msgid)] = "web.py"
    for path in TEMPLATES:
        for _lineno, msgid, _comments, _context in extract_from_file("jinja2.ext:babel_extract", str(path)):
            found[str(msgid)] = path.name
    return found


def catalogue() -> dict[str, Any]:
    with PO.open("rb") as fh:
        return {m.id: m for m in read_po(fh) if m.id}


def test_the_extraction_finds_the_strings() -> None:
    found = extracted()
    assert len(found) > 100
    assert found["Unlock this laptop"] == "unlock.html" and found["Record a visit"] == "web.py"


def test_every_user_visible_string_has_a_chinese_translation() -> None:
    cat = catalogue()
    missing = sorted(f"{where}: {msgid!r}" for msgid, where in extracted().items()
                     if msgid not in cat or not cat[msgid].string or cat[msgid].fuzzy)
    assert missing == [], "untranslated (add them to messages.po):\n" + "\n".join(missing)


def test_translations_keep_the_placeholders_of_their_msgid() -> None:
    for msgid, message in catalogue().items():
        assert set(PLACEHOLDER.findall(str(message.string))) == set(PLACEHOLDER.findall(str(msgid))), msgid


def test_the_catalogue_holds_no_stale_strings() -> None:
    stale = sorted(set(catalogue()) - set(extracted()))
    assert stale == [], f"no longer used, remove from messages.po: {stale}"


def _literal_text(source: str) -> list[str]:
    s = re.sub(r"\{#.*?#\}", " ", source, flags=re.S)
    s = re.sub(r"\{%.*?%\}", " ", s, flags=re.S)
    s = re.sub(r"\{\{.*?\}\}", " ", s, flags=re.S)
    read_attrs = re.findall(r'\b(?:title|placeholder|aria-label|alt)="([^"]*)"', s)
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S)
    s = re.sub(r"<!--.*?-->", " ", s, flags=re.S)
    s = re.sub(r"<[^>]*>", " ", s, flags=re.S)
    return [w for w in s.split() + read_attrs if re.search(r"[A-Za-z\u3400-\u9fff]", w)]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_hold_no_text_outside_gettext(template: Path) -> None:
    assert _literal_text(template.read_text(encoding="utf-8")) == []


def test_the_literal_text_check_catches_untranslated_words() -> None:
    assert _literal_text('<p title="Hi">{{ _("ok") }} Save 保存 · 3</p>{# note #}') == ["Save", "保存", "Hi"]


def test_every_field_entity_rule_and_enum_has_an_english_label() -> None:
    for name, spec in ENTITIES.items():
        assert name in web.ENTITY_EN
        assert set(web.FIELD_EN[name]) >= {f.name for f in spec.fields}, name
    assert set(web.RULE_EN) == set(RULE_DEFS) and all(web.RULE_EN.values())
    assert set(web.START_EVENT_EN) == set(START_EVENTS)
    for cls in (enums.Colour, enums.ObligationState, enums.AlertKind):
        for member in cls:
            assert member.en and member.zh
    for cls in (enums.State, enums.Action, enums.Category, enums.Subject, enums.Level):
        for member in cls:
            assert member.en and member.zh
    assert set(web.REFUSALS) >= {"transition.level_too_low", "transition.not_allowed_from_state"}
    assert set(TRANSITIONS) <= {a.value for a in enums.Action}


# ---- whole pages in each language ----


@pytest.fixture(scope="module")
def device_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_device_template(tmp_path_factory.mktemp("i18n"))


@pytest.fixture
def app(device_template: Path, tmp_path: Path) -> Iterator[Flask]:
    app = web.create_app(copy_device(device_template, tmp_path / "data"),
                         test_config={"TESTING": True, "MINQING_CLOCK": Clock()})
    yield app
    app.extensions["minqing"].lock_all()


DATA = {
    "zh": {"title": "宅基地边界纠纷", "p1": "张建国", "p2": "李秀英", "text": "上门了解情况", "terms": "按原界址立界",
           "edit_a": "甲的改法", "edit_b": "乙的改法"},
    "en": {"title": "Boundary dispute", "p1": "Zhang Jianguo", "p2": "Li Xiuying", "text": "Visited the home",
           "terms": "Reset the boundary", "edit_a": "Version A", "edit_b": "Version B"},
}


def tour(app: Flask, language: str) -> tuple[list[Page], list[str]]:
    """Every kind of page with data in ``language``; returns the pages and the data shown."""
    d = DATA[language]
    ui = UI(app.test_client())
    if language == "en":
        ui.get("/lang/en")
    pages = [ui.get("/unlock"), ui.unlock("wrong passphrase")]
    assert f'lang="{"zh-CN" if language == "zh" else "en"}"' in pages[0].text
    assert ui.unlock().status == 302
    fc: FieldClient = app.extensions["minqing"].client
    pages.append(ui.get("/cases/new"))
    bad = ui.post("/cases/new", {"n_parties": "2", "title": d["title"], "category": "dispute", "subject": "",
                                 "channel": "visit", "received_at": "2026-11-22T09:00", "p0-role": "petitioner",
                                 "p0-name": d["p1"], "p0-id_number": GOOD_ID[:-1] + "0", "p1-role": "respondent",
                                 "p1-name": d["p2"], "people_count": "0"})
    assert bad.status == 422
    pages.append(bad)
    cid = fc.new_case({"title": d["title"], "category": "accusation", "subject": "neighbour", "channel": "visit",
                       "summary": d["text"], "tags": ["group"]},
                      [{"role": "petitioner", "name": d["p1"], "id_number": GOOD_ID, "phone": "13812345678"},
                       {"role": "respondent", "name": d["p2"]}])
    parties = [p["id"] for p in fc.case_detail(cid)["parties"]]
    fc.add_record("visit", cid, {"kind": "home", "visited_at": "2026-11-22T09:30:00+08:00", "visitor": "wangli",
                                 "summary": d["text"]})
    fc.transition(cid, "accept")
    fc.add_record("notice", cid, {"kind": "acceptance", "served_at": "2026-11-22"})
    fc.add_record("mediation", cid, {"kind": "people", "mediator": "wangli", "held_at": "2026-11-22T14:00:00+08:00",
                                     "outcome": "agreement", "agreement_form": "written", "parties": parties,
                                     "terms": d["terms"], "remedies_told": True})
    fc.add_record("evaluation", cid, {"rating": "satisfied", "evaluated_at": "2026-11-22T15:00:00+08:00"})
    fc.add_record("leader_assignment", cid, {"leader": "wangli", "handler": "wangli", "assigned_at": "2026-11-22",
                                             "team": ["wangli"]})
    fc.add_record("note", cid, {"text": d["text"], "written_at": "2026-11-22T16:00:00+08:00"})
    fc.transition(cid, "extend", days=10, reason=d["text"])
    stamp = fc.replica.fold_state("case", cid)["win"]["title"][0]
    fc.edit("case", cid, {"title": d["edit_a"]})
    fc.record([{"entity": "case", "entity_id": cid, "case_id": cid, "kind": "set",
                "values": {"title": d["edit_b"]}, "base": {"title": stamp}}])
    fc.record([{"entity": "case", "entity_id": cid, "case_id": cid, "kind": "transition",
                "values": {"action": "reopen", "acting_level": "village"}}])
    fc.void("note", fc.case_detail(cid)["notes"][0]["id"], d["text"])
    pages += [ui.get("/cases"), ui.get("/cases?state=extended&sort=received"), ui.get(f"/cases/{cid}"),
              ui.get(f"/cases/{cid}?show=1")]
    for entity in web.RECORD_DEFAULTS:
        pages.append(ui.get(f"/cases/{cid}/{entity}/new"))
        pages.append(ui.post(f"/cases/{cid}/{entity}/new", {}))
    for action in fc.case_detail(cid)["allowed_actions"]:
        pages.append(ui.get(f"/cases/{cid}/transition/{action}"))
        pages.append(ui.post(f"/cases/{cid}/transition/{action}", {"days": "99", "reason": "。" * 2001}))
    pages.append(ui.post(f"/cases/{cid}/transition/reopen", {}, follow=True))
    other = fc.new_case({"title": d["title"], "category": "complaint", "subject": "other", "channel": "phone"}, [])
    fc.report_up(other, "t01")
    pages += [ui.get(f"/cases/{other}"), ui.get("/nowhere"), ui.post("/lock", token=False)]
    assert pages[-1].status == 400
    cases = [r["case_no"] for r in fc.list_cases()]
    return pages, [*d.values(), *cases, NODE_NAME]


def _without(text: str, data: list[str]) -> str:
    for item in sorted(data, key=len, reverse=True):
        text = text.replace(item, " ")
    return text


def test_english_pages_show_no_chinese_beyond_the_data(app: Flask) -> None:
    pages, data = tour(app, "en")
    for page in pages:
        text = _without(page.visible(), [*data, "中文"])
        assert not CJK.search(text), (page.response.request.path, CJK.findall(text)[:20], text[:400])


ERROR_CODE = re.compile(r"\b(?:http|web|client|replica|op|transition)\.[\w.]+")
ALLOWED_LATIN = {"wangli", "v001", "t01", "English", "X", "0571-12345678"}


def test_chinese_pages_show_no_english_beyond_the_data(app: Flask) -> None:
    pages, data = tour(app, "zh")
    for page in pages:
        text = ERROR_CODE.sub(" ", _without(page.visible(), data))  # codes are for IT, not translated
        words = {w for w in re.findall(r"[A-Za-z][A-Za-z0-9._-]*", text) if w not in ALLOWED_LATIN}
        assert not words, (page.response.request.path, sorted(words))

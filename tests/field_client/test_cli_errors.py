"""Mistakes end in one sentence and exit code 2 (or a JSON error body), and change nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from field_client.store import FieldClient
from tests.field_client.conftest import PASSPHRASE, Cli, new_case, op_count_and_digest

CASE_NEW = ("case", "new", "--title", "t", "--category", "dispute", "--subject", "neighbour", "--channel", "visit")


def _one_sentence(text: str) -> None:
    assert text.strip() and "\n" not in text.strip(), text
    assert "Traceback" not in text


def test_a_wrong_passphrase_exits_2_with_a_sentence_and_changes_nothing(
    cli: Cli, cli_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_case(cli)
    before = op_count_and_digest(cli_data)
    keyfile = (cli_data / "device.json").read_bytes()
    monkeypatch.setenv("MINQING_PASSPHRASE", "not-the-passphrase")
    for argv in (CASE_NEW, ("case", "list"), ("status",)):
        r = cli(*argv)
        assert r.code == 2 and r.out == ""
        _one_sentence(r.err)
        assert "口令不对" in r.err
    assert op_count_and_digest(cli_data) == before
    assert (cli_data / "device.json").read_bytes() == keyfile
    r = cli("--json", *CASE_NEW)
    assert r.code == 2 and r.json()["error"]["code"] == "client.wrong_passphrase"


def test_an_invalid_id_number_is_refused_naming_the_field_in_chinese(cli: Cli, cli_data: Path) -> None:
    before = op_count_and_digest(cli_data)
    r = cli(*CASE_NEW, "--party", "role=petitioner,name=张三,id_number=110105194912310021")
    assert r.code == 2
    _one_sentence(r.err)
    assert "身份证号" in r.err and "第 1 位当事人" in r.err
    r = cli(*CASE_NEW, "--party", "role=petitioner,name=张三,id_number=12345")
    assert r.code == 2 and "身份证号" in r.err and "18" in r.err
    assert op_count_and_digest(cli_data) == before


def test_every_wrong_field_is_named_at_once(cli: Cli) -> None:
    r = cli("--json", "case", "new", "--title", "t", "--category", "nonsense", "--subject", "邻里纠纷",
            "--channel", "来访", "--people-count", "two", "--party", "role=petitioner,phone=123")
    assert r.code == 2
    details = r.json()["error"]["details"]
    assert set(details) == {"category", "people_count", "party1.name", "party1.phone"}
    assert "类别" in details["category"] and "矛盾纠纷" in details["category"]  # lists the choices
    assert "姓名" in details["party1.name"] and "电话" in details["party1.phone"]


def test_an_unknown_case_exits_2(cli: Cli) -> None:
    new_case(cli)
    for argv in (("case", "show", "no-such-case"), ("visit", "add", "zzz", "--kind", "walk"),
                 ("case", "transition", "zzz", "accept"), ("note", "add", "zzz", "--text", "x")):
        r = cli(*argv)
        assert r.code == 2, argv
        _one_sentence(r.err)
        assert "找不到案件" in r.err


def test_a_reference_that_matches_two_cases_is_refused(cli: Cli, cli_data: Path) -> None:
    with FieldClient.open(cli_data, PASSPHRASE) as c:  # 17 ids: two share a first hex digit
        ids = [c.new_case({"title": "t", "category": "dispute", "subject": "other", "channel": "visit"})
               for _ in range(17)]
    first = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    r = cli("case", "show", first)
    assert r.code == 2 and "不止一件" in r.err
    assert cli("case", "show", ids[0]).code == 0
    assert cli("case", "show", " ").code == 2


def test_a_transition_not_allowed_now_is_refused_with_the_allowed_ones(cli: Cli, cli_data: Path) -> None:
    case = new_case(cli)
    before = op_count_and_digest(cli_data)
    r = cli("case", "transition", case["case_no"], "close")
    assert r.code == 2
    _one_sentence(r.err)
    assert "办结" in r.err and "已登记" in r.err
    for allowed in ("受理(accept)", "不予受理(reject)", "转送/交办(route)", "上报(escalate)"):
        assert allowed in r.err
    body = cli("--json", "case", "transition", case["case_no"], "close").json()
    assert body["error"]["code"] == "client.transition_not_allowed"
    assert sorted(body["error"]["details"]["allowed"]) == ["accept", "escalate", "reject", "route"]
    assert op_count_and_digest(cli_data) == before
    assert cli("case", "transition", case["case_no"], "飞升").code == 2


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (CASE_NEW + ("--party", "role=petitioner,name=张三,id_number=110105194912310021"), "client.input"),
        (("case", "show", "nothing-like-it"), "client.not_found"),
        (("case", "new", "--title", "t"), "cli.usage"),
        (("conflict", "resolve", "abcdef"), "client.not_found"),
        (("case", "list", "--state", "飞升"), "client.input"),
    ],
)
def test_json_errors_have_one_shape_and_a_stable_code(cli: Cli, argv: tuple[str, ...], code: str) -> None:
    r = cli("--json", *argv)
    assert r.code == 2 and r.err == ""
    body = json.loads(r.out)
    assert set(body) == {"ok", "error"} and body["ok"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_json_given_after_the_command_works_too(cli: Cli) -> None:
    r = cli("case", "show", "nothing-like-it", "--json")
    assert r.code == 2 and r.json()["error"]["code"] == "client.not_found"


def test_a_malformed_command_line_gets_a_chinese_sentence(cli: Cli) -> None:
    r = cli("case", "new", "--title", "t")
    assert r.code == 2 and "缺少必填参数" in r.err and "--category" in r.err
    r = cli("frobnicate")
    assert r.code == 2 and "frobnicate" in r.err and "无效" in r.err
    r = cli("case")
    assert r.code == 2 and "缺少" in r.err
    r = cli("--lang", "en", "case", "new")
    assert r.code == 2 and "missing required arguments" in r.err


def test_no_passphrase_and_no_terminal_exits_2_saying_how_to_give_one(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MINQING_PASSPHRASE")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    r = cli("case", "list")
    assert r.code == 2 and "MINQING_PASSPHRASE" in r.err and "--passphrase-file" in r.err
    assert cli("--json", "status").json()["error"]["code"] == "client.passphrase_missing"


def test_a_passphrase_file_is_read_and_wins_over_the_environment(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINQING_PASSPHRASE", "wrong-one-here")
    good = tmp_path / "pass.txt"
    good.write_text(PASSPHRASE + "\n", encoding="utf-8")
    assert cli("--passphrase-file", str(good), "status").code == 0
    assert cli("status").code == 2
    r = cli("--passphrase-file", str(tmp_path / "missing.txt"), "status")
    assert r.code == 2 and "missing.txt" in r.err


def test_a_command_on_a_folder_without_a_device_says_to_run_init(cli: Cli, tmp_path: Path) -> None:
    r = cli("case", "list", data=tmp_path / "empty")
    assert r.code == 2 and "field-client init" in r.err
    assert not (tmp_path / "empty").exists()


def test_an_unexpected_fault_is_a_sentence_with_exit_1_not_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: FieldClient, **kw: object) -> list[dict[str, object]]:
        raise RuntimeError("boom")

    monkeypatch.setattr(FieldClient, "list_cases", broken)
    r = cli("case", "list")
    assert r.code == 1 and "Traceback" not in r.err and "IT" in r.err and "boom" in r.err
    assert cli("--json", "case", "list").json()["error"]["code"] == "client.internal"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_init_asks_for_the_passphrase_twice_and_refuses_a_mismatch(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MINQING_PASSPHRASE")
    monkeypatch.setattr("sys.stdin", _Terminal())
    typed = iter(["first-passphrase", "other-passphrase", "good-passphrase", "good-passphrase", "good-passphrase"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    folder = tmp_path / "laptop"
    r = cli("init", "--node", "V001", "--user", "wangli", data=folder)
    assert r.code == 2 and "不一样" in r.err and not folder.exists()
    assert cli("init", "--node", "V001", "--user", "wangli", data=folder).code == 0
    assert len(prompts) == 4 and all("口令" in p for p in prompts)
    assert cli("status", data=folder).code == 0  # asks once, with the good passphrase
    assert len(prompts) == 5

"""Personal data: encrypted at rest on the laptop, masked on screen unless asked."""

from __future__ import annotations

from pathlib import Path

from tests.field_client.conftest import ID_NUMBER, PHONE, Cli, foreign_set, new_case

NAME = "张三丰"
MASKED_ID = "1101**********002X"
MASKED_PHONE = "138****5678"


def _record_a_case_full_of_personal_data(cli: Cli) -> dict[str, str]:
    case = new_case(
        cli,
        "--summary", f"{NAME}反映邻居占地", "--demands", f"{NAME}要求恢复原状",
        "--party", f"role=petitioner,name={NAME},id_number={ID_NUMBER},phone={PHONE},address=东村3组",
    )
    no = case["case_no"]
    assert cli("visit", "add", no, "--kind", "上门", "--summary", f"到{NAME}家了解情况，电话{PHONE}").code == 0
    assert cli("note", "add", no, "--text", f"{NAME}身份证{ID_NUMBER}").code == 0
    assert cli("mediation", "add", no, "--kind", "人民调解", "--outcome", "达成协议", "--form", "oral",
               "--terms", f"{NAME}同意让出半米").code == 0
    return case


def test_names_id_numbers_and_phones_are_not_in_the_files_on_disk(cli: Cli, cli_data: Path) -> None:
    _record_a_case_full_of_personal_data(cli)
    files = [cli_data / "replica.db", cli_data / "replica.db-wal", cli_data / "device.json"]
    present = [f for f in files if f.exists()]
    assert cli_data / "replica.db" in present and cli_data / "device.json" in present
    secrets = [NAME.encode("utf-8"), ID_NUMBER.encode(), PHONE.encode(), ID_NUMBER[6:14].encode()]
    for f in present:
        raw = f.read_bytes()
        for secret in secrets:
            assert secret not in raw, f"{secret!r} found in {f.name}"
    # the search itself works: a field that is not personal (the case number) is plain text,
    # while the title (people write names into it) is sealed like the other personal fields
    replica_bytes = b"".join(f.read_bytes() for f in present if f.name.startswith("replica"))
    assert b"-2026-0001" in replica_bytes or b"-0001" in replica_bytes
    assert "宅基地边界纠纷".encode() not in replica_bytes
    # and the data is really there, readable with the passphrase
    assert NAME in cli("case", "show", "0001").out


def test_case_show_masks_id_numbers_and_phones_everywhere_unless_unmasked(cli: Cli) -> None:
    case = _record_a_case_full_of_personal_data(cli)
    text = cli("case", "show", case["case_no"]).out
    assert MASKED_ID in text and MASKED_PHONE in text
    as_json = cli("case", "show", case["case_no"], "--json")
    (party,) = as_json.json()["parties"]
    assert party["id_number"] == MASKED_ID and party["phone"] == MASKED_PHONE
    party_created = next(op for op in as_json.json()["timeline"] if op["entity"] == "party")
    assert party_created["values"]["id_number"] == MASKED_ID
    for shown in (text, as_json.out):
        assert f'"{ID_NUMBER}"' not in shown and f"：{ID_NUMBER}" not in shown
        assert f'"{PHONE}"' not in shown and f"：{PHONE}" not in shown

    unmasked = cli("case", "show", case["case_no"], "--unmask")
    assert ID_NUMBER in unmasked.out and PHONE in unmasked.out
    (party,) = cli("case", "show", case["case_no"], "--json", "--unmask").json()["parties"]
    assert party["id_number"] == ID_NUMBER and party["phone"] == PHONE


def test_conflicting_phone_numbers_are_masked_in_the_conflict_list(cli: Cli, cli_data: Path) -> None:
    case = _record_a_case_full_of_personal_data(cli)
    party_id = cli("case", "show", case["id"], "--json").json()["parties"][0]["id"]
    foreign_set(cli_data, "party", party_id, case["id"], "phone", "13900001111")
    listed = cli("conflict", "list")
    assert "139****1111" in listed.out and "13900001111" not in listed.out
    assert "13900001111" in cli("conflict", "list", "--unmask").out
    (conflict,) = cli("--json", "conflict", "list").json()["conflicts"]
    assert {v["value"] for v in conflict["values"]} == {"138****5678", "139****1111"}
    # choosing a value by typing it works on the real (unmasked) numbers
    assert cli("conflict", "resolve", conflict["id"], "--value", "13900001111").code == 0
    (party,) = cli("case", "show", case["id"], "--json", "--unmask").json()["parties"]
    assert party["phone"] == "13900001111"

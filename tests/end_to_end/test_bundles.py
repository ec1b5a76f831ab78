"""Bundles: a USB round trip through a township laptop (docs/sync.md "Bundles").

The village laptop exports to a folder, a township laptop carries it (a copy),
`sync-server import` merges it, `sync-server export-for` writes the answer, which is
carried back and imported by the laptop.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from field_client.sync import Erased, SyncError
from tests.end_to_end.conftest import TOWN_E, VILLAGE_1, VILLAGE_2, VILLAGE_3, LaptopFactory, Server


def test_usb_round_trip_through_a_township_laptop(server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    """A USB round trip through a township laptop: merged, answered, imported."""
    v = laptops("v", VILLAGE_1)  # offline village laptop: enrolled, then never online again
    neighbour = laptops("n", VILLAGE_1)  # same village, syncs online
    elsewhere = laptops("w", VILLAGE_2)  # another village: nothing of it may reach v
    township = laptops("t", TOWN_E, level="township")  # the carrier
    far = laptops("far", VILLAGE_3)  # another offline village whose stick rides along

    n_case = neighbour.new_case("养殖场异味扰民", category="complaint", subject="environment")
    neighbour.note(n_case)
    neighbour.sync()
    w_case = elsewhere.new_case("西村的纠纷")
    elsewhere.sync()

    v_case = v.new_case("土地承包经营权纠纷", subject="land_contract")
    v.visit(v_case)
    v.client.transition(v_case, "accept")
    v.note(v_case)
    stick = tmp_path / "usb"
    written = v.agent.export_bundle(stick)
    assert len(written) == 2 and written[-1].name.endswith("-request.mqe")
    assert not v.outbox_all_acked()

    far_case = far.new_case("南村的纠纷")
    far_stick = tmp_path / "usb-far"
    far.agent.export_bundle(far_stick)

    # the township laptop carries both sticks to the county in one folder: copies, no more
    carried = tmp_path / "at-county"
    shutil.copytree(stick, carried)
    shutil.copytree(far_stick, carried, dirs_exist_ok=True)
    report = server.cli("import", str(carried)).json()
    assert report["ok"] is True and report["refused"] == []
    assert report["files"] == 4 and report["merged"] == 2 and report["requests"] == 2
    assert report["applied_ops"] == len(v.written()) + len(far.written()) and report["quarantined"] == 0
    assert v.written() | far.written() <= set(server.op_ids())
    far_answers = tmp_path / "far-answers"
    server.cli("export-for", far.device_id, str(far_answers))
    far.agent.import_bundle(far_answers)
    assert far.outbox_all_acked() and far.op_ids() == far.written()  # nothing of the other township
    assert far.client.replica.get("case", far_case) is not None

    answers = tmp_path / "answers"
    out = server.cli("export-for", v.device_id, str(answers)).json()
    assert out["ok"] is True and len(out["files"]) == 1
    assert Path(out["files"][0]).name == f"mq-answer-{v.device_id}-000001.mqe"
    back = tmp_path / "back-at-village"
    shutil.copytree(answers, back)
    got = v.agent.import_bundle(back)
    assert v.outbox_all_acked()
    assert got.quarantined == []
    assert neighbour.written() <= v.op_ids()  # the other laptop of its village
    assert not (elsewhere.written() & v.op_ids())  # nothing of another village
    assert v.client.case_detail(n_case)["case"]["title"] == "养殖场异味扰民"
    assert v.client.replica.get("case", w_case) is None
    assert v.op_ids() == neighbour.written() | v.written()
    neighbour.sync()
    assert neighbour.op_ids() == v.op_ids()
    assert neighbour.digest() == v.digest()
    township.sync()  # the carrier sees the cases only by syncing itself
    assert v.written() <= township.op_ids()

    # the same stick once more: duplicates, nothing changes
    ledger, digest = server.ledger_count(), server.digest()
    again = server.cli("import", str(carried)).json()
    assert again["merged"] == 0 and again["duplicates"] == 2 and again["refused"] == []
    assert server.ledger_count() == ledger and server.digest() == digest

    # a second round trip: nothing new either way
    before = v.digest()
    stick2 = tmp_path / "usb2"
    written2 = v.agent.export_bundle(stick2)
    assert [p.name for p in written2] == [f"mq-{v.device_id}-request.mqe"]
    second = server.cli("import", str(stick2)).json()
    assert second["merged"] == 0 and second["requests"] == 1 and second["refused"] == []
    answers2 = tmp_path / "answers2"
    server.cli("export-for", v.device_id, str(answers2))
    got2 = v.agent.import_bundle(answers2)
    assert got2.pulled_ops == 0
    assert v.digest() == before and v.outbox_all_acked()
    assert server.ledger_count() == ledger and server.digest() == digest

    # and the first answer, imported twice, changes nothing
    v.agent.import_bundle(back)
    assert v.digest() == before

    rebuilt = server.cli("rebuild").json()
    assert rebuilt["equal"] is True and rebuilt["chain_ok"] is True


def test_a_carrier_cannot_alter_a_bundle(server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    v = laptops("v", VILLAGE_1)
    case = v.new_case()
    v.note(case)
    stick = tmp_path / "usb"
    files = v.agent.export_bundle(stick)
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0x40
    files[0].write_bytes(bytes(data))
    before = server.ledger_count()
    r = server.cli("import", str(stick), check=False)
    assert r.rc == 1
    doc = r.json()
    assert [x["code"] for x in doc["refused"]] == ["envelope.bad_signature"]
    assert doc["refused"][0]["file"] == files[0].name
    assert doc["requests"] == 1  # the good file next to it is still taken
    assert server.ledger_count() == before and server.op_ids() == []
    assert "envelope.bad_signature" in server.refusal_codes()

    # an answer altered on the way back is refused by the laptop
    v.agent.export_bundle(tmp_path / "usb-fresh")
    server.cli("import", str(tmp_path / "usb-fresh"))
    answers = tmp_path / "answers"
    (path,) = [Path(p) for p in server.cli("export-for", v.device_id, str(answers)).json()["files"]]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(SyncError) as exc:
        v.agent.import_bundle(answers)
    assert exc.value.code == "sync.bad_answer"
    assert not v.outbox_all_acked()


def test_a_revoked_laptop_erases_itself_on_its_bundle_answer(
        server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    v = laptops("v", VILLAGE_1)
    v.new_case()
    v.agent.export_bundle(tmp_path / "usb")
    server.cli("device", "revoke", v.device_id)
    r = server.cli("import", str(tmp_path / "usb"), check=False)
    assert r.rc == 1
    assert {x["code"] for x in r.json()["refused"]} == {"sync.device_revoked"}
    assert server.op_ids() == []
    out = server.cli("export-for", v.device_id, str(tmp_path / "answers")).json()
    assert [Path(p).name for p in out["files"]] == [f"mq-answer-{v.device_id}-erase.mqe"]
    with pytest.raises(Erased):
        v.agent.import_bundle(tmp_path / "answers")
    assert sorted(p.name for p in v.dir.iterdir()) == ["ERASED.txt"]


def test_bundles_carried_out_of_order_wait_for_their_case_and_then_merge(
        server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    """A stick carries seq 2 (a note) before seq 1 (its case): the note waits
    (``sync.case_unknown``) and is released by itself when the case arrives."""
    v = laptops("v", VILLAGE_1)
    case = v.new_case()
    v.agent.pack()  # seq 1: the case
    v.note(case)
    v.visit(case)
    stick = tmp_path / "usb"
    files = v.agent.export_bundle(stick)
    assert [p.name for p in files[:2]] == [f"mq-{v.device_id}-00000001.mqe", f"mq-{v.device_id}-00000002.mqe"]
    first_trip = tmp_path / "trip1"
    first_trip.mkdir()
    shutil.copy(files[1], first_trip)
    report = server.cli("import", str(first_trip)).json()
    assert report["merged"] == 1 and report["quarantined"] == 2
    held = server.cli("quarantine", "list").json()
    assert {q["code"] for q in held} == {"sync.case_unknown"} and len(held) == 2

    second_trip = tmp_path / "trip2"
    second_trip.mkdir()
    shutil.copy(files[0], second_trip)
    report = server.cli("import", str(second_trip)).json()
    assert report["merged"] == 1 and report["quarantined"] == 0
    assert server.cli("quarantine", "list").json() == []
    assert set(server.op_ids()) == v.written()
    assert {q["released_by"] for q in server.cli("quarantine", "list", "--all").json()} == {"auto"}

    answers = tmp_path / "answers"
    server.cli("export-for", v.device_id, str(answers))
    v.agent.import_bundle(answers)
    assert v.outbox_all_acked()
    assert v.digest() == server.digest()
    assert server.cli("rebuild").json()["equal"] is True

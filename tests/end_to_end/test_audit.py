"""The IT officer's proof, against a real ``sync-server serve`` (docs/audit.md): audit verify
names an edited ledger row, audit devices shows a gap until the laptop resends, a backup
taken while two laptops sync restores to a server the laptops converge with, a restored
laptop re-enrolls under a new id, keys rotate without losing a batch in flight, and
``field-client verify`` lists what either side lacks."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from field_client.lifecycle import reenroll, rotate_keys
from field_client.store import FieldClient
from field_client.sync import HttpTransport, SyncAgent, SyncError
from field_client.verify import verify
from schema import envelope as env
from schema.ops import ChangeSet
from tests.end_to_end.conftest import (
    OCTET,
    PASSWORD,
    VILLAGE_1,
    VILLAGE_2,
    Laptop,
    LaptopFactory,
    Server,
    assert_error_body,
)


def _devices(server: Server) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in server.cli("audit", "devices").json()}


def _checkpoint(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _ledger_seqs(server: Server, device: str) -> list[int]:
    return [r[0] for r in server.rows(
        "SELECT device_seq FROM ledger WHERE kind='device' AND device=? ORDER BY device_seq", device)]


def _packed(lap: Laptop) -> list[int]:
    return [r[0] for r in lap.client.replica.conn.execute("SELECT seq FROM outgoing ORDER BY seq")]


# ---- audit verify names the first bad entry ----


def test_one_byte_edited_in_a_ledger_row_fails_audit_verify_which_names_the_row(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.sync()
    for i in range(3):
        a.note(case, f"第{i}次回访。")
        a.sync()
    first = server.cli("audit", "verify")
    assert first.json()["ok"] is True and first.json()["entries"] == 4
    server.stop()
    db = server.data / "server.db"
    _checkpoint(db)
    [(target, envelope)] = server.rows("SELECT ledger_seq, envelope FROM ledger WHERE ledger_seq=3")
    raw = bytearray(db.read_bytes())
    window = bytes(envelope[len(envelope) // 2: len(envelope) // 2 + 24])
    assert raw.count(window) == 1  # the row's bytes, once in the file
    raw[raw.index(window) + 5] ^= 0x01  # one bit of one byte of ledger row 3
    db.write_bytes(bytes(raw))

    res = server.cli("audit", "verify", check=False)
    assert res.rc == 1
    report = res.json()
    assert report["ok"] is False and report["chain_ok"] is False
    assert report["first_bad"]["ledger_seq"] == target
    assert report["first_bad"]["device"] == a.device_id and report["first_bad"]["device_seq"] == 3
    assert "digest" in report["first_bad"]["reason"]
    text = server.cli("audit", "verify", "--quiet", check=False, json_out=False)
    assert text.rc == 1 and f"第 {target} 条" in text.out and "FAILED" in text.out


# ---- audit devices shows a gap, and it closes ----


def test_envelopes_lost_on_the_way_show_as_a_gap_that_closes_when_the_laptop_resends(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()  # the case and its two parties: three ops
    for i in range(9):
        a.note(case, f"记录{i}")
    a.agent.pack(chunk_ops=1)
    outgoing = a.agent.unacked()
    assert [seq for seq, _, _ in outgoing] == list(range(1, 13))
    with requests.Session() as s:  # 1-4 and 10-12 arrive; 5-9 are lost on the way
        for seq, envelope, _ in outgoing:
            if not 5 <= seq <= 9:
                r = s.post(server.url + "/api/v1/push", data=envelope, headers={"Content-Type": OCTET}, timeout=10)
                assert r.status_code == 200
    dev = _devices(server)[a.device_id]
    assert dev["gaps"] == [[5, 9]] and dev["last_seq"] == 12 and dev["envelopes"] == 7
    text = server.cli("audit", "devices", json_out=False).out
    assert "5-9" in text
    csv_text = server.cli("audit", "devices", "--csv", json_out=False).out
    assert csv_text.splitlines()[0].startswith("device_id,node") and "5-9" in csv_text

    report = a.sync()  # the laptop never had an answer for any of them: it sends them all
    assert report.pushed_envelopes == 12 and report.duplicates == 7
    dev = _devices(server)[a.device_id]
    assert dev["gaps"] == [] and dev["last_seq"] == 12 and dev["envelopes"] == 12
    assert a.written() <= set(server.op_ids())


# ---- backup while two laptops sync, restore, converge ----


def test_a_backup_taken_while_two_laptops_sync_restores_and_they_converge_with_nothing_missing_or_doubled(
        server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    case = a.new_case()
    a.sync()
    b.sync()
    rounds = 14
    progress = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def work(lap: Laptop) -> None:
        try:
            for i in range(rounds):
                lap.note(case, f"{lap.name} 第{i}次记录。")
                if i % 3 == 0:
                    lap.visit(case)
                lap.sync()
                progress[lap.name] = i + 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lap,)) for lap in (a, b)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while min(progress.values()) < rounds // 3 and time.monotonic() < deadline and not errors:
        time.sleep(0.02)
    dest = tmp_path / "backup"
    taken = server.cli("backup", str(dest)).json()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert taken["ok"] is True and (dest / "server.db").exists() and (dest / "server_keys.json").exists()
    before = server.ledger_count()
    assert taken["ledger_head"]["ledger_seq"] < before  # the laptops went on after the backup

    # a running server's folder is not restored over
    busy = server.cli("restore", str(dest), "--force", check=False)
    assert busy.rc == 2 and busy.json()["error"]["code"] == "backup.server_running"
    server.stop()
    refused = server.cli("restore", str(dest), check=False)
    assert refused.rc == 2 and refused.json()["error"]["code"] == "backup.data_not_empty"
    restored = server.cli("restore", str(dest), "--force").json()
    assert restored["ledger_head"] == taken["ledger_head"] and Path(restored["moved_aside"]).is_dir()
    assert server.ledger_count() == taken["ledger_head"]["ledger_seq"] < before
    assert server.cli("audit", "verify").json()["ok"] is True
    server.start()

    for _ in range(2):
        a.sync()
        b.sync()
    written = a.written() | b.written()
    ops = server.op_ids()
    assert len(ops) == len(set(ops))  # nothing doubled on the server
    assert set(ops) == written == a.op_ids() == b.op_ids()  # nothing missing anywhere
    assert a.digest() == b.digest() == server.digest()
    for lap in (a, b):  # every batch exactly once in the ledger, under the number the laptop gave it
        assert _ledger_seqs(server, lap.device_id) == _packed(lap) == list(range(1, len(_packed(lap)) + 1))
        assert lap.outbox_all_acked()
    assert server.cli("audit", "verify").json()["ok"] is True
    assert all(d["gaps"] == [] for d in _devices(server).values())
    # what happened on the laptops: a new server epoch, and batches the server had lost, resent
    logged = {kind for lap in (a, b) for (kind,) in lap.client.replica.conn.execute("SELECT kind FROM sync_log")}
    assert {"server_epoch", "server_lost"} <= logged


# ---- a restored laptop re-enrolls; the old id stays closed ----


def _open_copy(src: Laptop, dest: Path, server: Server) -> tuple[FieldClient, SyncAgent]:
    src.client.replica.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(src.dir, dest)
    client = FieldClient.open(dest, PASSWORD)
    return client, SyncAgent(client, HttpTransport(server.url, timeout=(5.0, 30.0)), retries=0, backoff_s=0.0)


def test_a_restored_laptop_reenrolled_under_a_new_id_is_accepted_and_the_old_id_stays_closed(
        server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.sync()  # seq 1
    copy_client, copy_agent = _open_copy(a, tmp_path / "restored", server)  # the backup of the laptop
    try:
        a.note(case, "原笔记本在备份之后的记录。")
        a.sync()  # seq 2, from the original
        lost_note = copy_client.add_record("note", case, {"text": "恢复后补记。", "written_at": "2026-11-20T10:00:00+08:00"})
        with pytest.raises(SyncError) as refused:
            copy_agent.sync()  # seq 2 again, with other content
        assert refused.value.code == "sync.seq_reused"

        code = server.cli("device", "reenroll", a.device_id).json()["code"]
        result = reenroll(copy_agent, PASSWORD, code)
        new_id = result["device_id"]
        assert new_id != a.device_id and copy_client.device_id == new_id and result["replaces"] == a.device_id
        assert result["closed_seq"] == 2 and result["resend"] == 1
        with pytest.raises(SyncError) as again:  # the code named the old id: this laptop is no longer it
            reenroll(copy_agent, PASSWORD, code)
        assert again.value.code == "enroll.wrong_device"
        fresh = copy_client.add_record("note", case, {"text": "新编号下的记录。", "written_at": "2026-11-20T11:00:00+08:00"})
        report = copy_agent.sync()  # the note recorded under the old id, and the new one
        assert report.quarantined == [] and report.pushed_envelopes == 1 and report.pushed_ops == 2
        assert _ledger_seqs(server, new_id) == [1]
        retired = dict(copy_client.replica.conn.execute("SELECT seq, envelope FROM outgoing_retired"))
    finally:
        copy_client.close()
    entity_ids = {r[0] for r in server.rows("SELECT entity_id FROM ops")}
    assert {lost_note, fresh} <= entity_ids

    devices = _devices(server)
    assert devices[a.device_id]["status"] == "replaced" and devices[a.device_id]["replaced_by"] == new_id
    assert devices[new_id]["replaces"] == [a.device_id] and devices[new_id]["status"] == "active"
    # the old id's sequence stays closed: the original laptop, and a retired batch replayed
    late = a.note(case, "旧编号还想发的记录。")
    with pytest.raises(SyncError) as closed:
        a.sync()
    assert closed.value.code == "sync.device_replaced"
    r = server.post("/api/v1/push", retired[2])
    assert_error_body(r.status_code, r.content, code="sync.device_replaced")
    assert r.status_code == 409
    assert _ledger_seqs(server, a.device_id) == [1, 2]
    assert late not in {r[0] for r in server.rows("SELECT entity_id FROM ops")}
    assert "sync.device_replaced" in server.refusal_codes()
    assert server.cli("audit", "verify").json()["ok"] is True
    history = server.cli("device", "history", a.device_id).json()
    assert [e["kind"] for e in history["events"]] == ["replaced"]


# ---- key rotation: a batch in flight keeps its old signature ----


def test_rotated_keys_take_over_from_the_next_batch_and_the_ledger_still_verifies(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.sync()  # seq 1, old key
    a.note(case, "换钥前打包的记录。")
    a.agent.pack()  # seq 2, signed with the old key, not yet sent
    old_key = a.client.keys.ed25519
    result = rotate_keys(a.agent, PASSWORD)
    assert result["first_seq"] == 3 and a.client.keys.ed25519 is not old_key
    a.note(case, "换钥后的记录。")
    report = a.sync()  # seq 2 (old key) and 3 (new key)
    assert report.pushed_envelopes == 2 and a.outbox_all_acked()
    assert _ledger_seqs(server, a.device_id) == [1, 2, 3]
    assert server.cli("audit", "verify").json()["ok"] is True
    assert _devices(server)[a.device_id]["keys_rotated"] == 1
    # the old key signs nothing new
    forged = env.seal_changeset(ChangeSet(a.device_id, 4, ()), signing_key=old_key,
                                recipient=a.agent._server_keys()[0])
    r = server.post("/api/v1/push", forged)
    assert_error_body(r.status_code, r.content, code="envelope.bad_signature")
    # the laptop reopens with its new keys from disk
    a.client.close()
    reopened = FieldClient.open(a.dir, PASSWORD)
    try:
        assert reopened.device_id == a.device_id
        assert reopened.keys.ed25519.public_key().public_bytes_raw() == \
            a.client.keys.ed25519.public_key().public_bytes_raw()
    finally:
        reopened.close()
        a.client = FieldClient.open(a.dir, PASSWORD)
        a.agent = SyncAgent(a.client, HttpTransport(server.url), retries=0, backoff_s=0.0)


# ---- field-client verify ----


def test_field_client_verify_lists_what_either_side_lacks_by_id_and_stamp_only(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    c = laptops("c", VILLAGE_2)  # another village: not b's scope
    a.new_case()
    a.sync()
    c.new_case()
    c.sync()
    b.new_case()  # b has not synced at all: it lacks a's case, the server lacks b's
    result = verify(b.agent)
    assert result["in_sync"] is False
    assert {m["why"] for m in result["missing_on_server"]} == {"pending"}
    assert {m["op_id"] for m in result["missing_on_server"]} == b.written()
    assert {m["op_id"] for m in result["missing_on_laptop"]} == a.written()  # nothing of village 2
    body = json.dumps(result, ensure_ascii=False)
    assert "王建国" not in body and "13812345678" not in body  # no values, only ids and stamps
    b.sync()
    again = verify(b.agent)
    assert again["in_sync"] is True and again["laptop_digest"] == again["server_digest"]

"""Sync end to end: a real `sync-server serve` process, real laptops over HTTP (docs/sync.md).

Convergence with a conflict, duplicates and relays, scope and quarantine, enrollment, and
the OpenAPI document.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from field_client.sync import SyncError
from schema import envelope as env
from schema.ops import canonical_json
from tests.end_to_end.conftest import (
    COUNTY,
    TOWN_E,
    TOWN_W,
    VILLAGE_1,
    VILLAGE_2,
    Laptop,
    LaptopFactory,
    Server,
    assert_error_body,
)

# ---- 1. convergence with a concurrent edit ----


@pytest.mark.parametrize("first", ["A", "B"])
def test_two_laptops_edit_the_same_field_offline_and_converge(server: Server, laptops: LaptopFactory,
                                                              first: str) -> None:
    """Two laptops edit the same field of the same case offline, plus other work; both sync
    in either order: both laptops and the server converge, the conflict is listed with both
    values, nothing is missing from any op log."""
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    case = a.new_case("灌溉水渠纠纷")
    a.sync()
    b.sync()
    assert b.client.case_detail(case)["case"]["title"] == "灌溉水渠纠纷"

    # offline: both edit the title, and do other work
    a.client.edit("case", case, {"title": "灌溉水渠改道纠纷（东村）"})
    a.visit(case)
    a.client.transition(case, "accept")
    other_a = a.new_case("拖欠农民工工资", category="complaint", subject="wage_arrears")
    b.client.edit("case", case, {"title": "水渠纠纷（西村版本）"})
    b.note(case)
    other_b = b.new_case("赡养老人纠纷", subject="family")
    b.note(other_b, "双方同意下周调解。")

    order = [a, b] if first == "A" else [b, a]
    for lap in order:
        report = lap.sync()
        assert report.quarantined == []
    order[0].sync()  # the first one now pulls what the second pushed

    digests = {a.digest(), b.digest(), server.digest()}
    assert len(digests) == 1, digests
    written = a.written() | b.written()
    assert len(written) == len(a.written()) + len(b.written())
    for lap in (a, b):
        assert written <= lap.op_ids(), f"{lap.name} misses {written - lap.op_ids()}"
        assert lap.outbox_all_acked()
    server_ops = server.op_ids()
    assert len(server_ops) == len(set(server_ops)) == len(written)
    assert set(server_ops) == written

    edit_ids = {
        lap.name: next(op.op_id for op in lap.client.replica.ops_for_entity("case", case)
                       if op.kind == "set" and op.device == lap.device_id)
        for lap in (a, b)
    }
    # the conflict, with both op ids, on all three replicas
    on_server = [c for c in server.conflicts() if c["field"] == "title"]
    assert len(on_server) == 1 and set(on_server[0]["op_ids"]) == set(edit_ids.values())
    assert on_server[0]["status"] == "open" and on_server[0]["kind"] == "concurrent_edit"
    for lap in (a, b):
        conflicts = lap.client.case_detail(case)["conflicts"]
        assert len(conflicts) == 1
        c = conflicts[0]
        assert c["id"] == on_server[0]["id"]
        assert set(c["op_ids"]) == set(edit_ids.values())
        assert {v["value"] for v in c["values"]} == {"灌溉水渠改道纠纷（东村）", "水渠纠纷（西村版本）"}
        assert {v["device"] for v in c["values"]} == {a.device_id, b.device_id}
    # the same winner and the same rows everywhere (title is not a personal field)
    titles = {lap.client.case_detail(case)["case"]["title"] for lap in (a, b)}
    titles.add(server.scalar("SELECT title FROM cases WHERE id=?", case))
    assert len(titles) == 1
    states = {lap.client.replica.get("case", case)["state"] for lap in (a, b)}
    states.add(server.scalar("SELECT state FROM cases WHERE id=?", case))
    assert len(states) == 1
    for cid in (other_a, other_b):
        assert a.client.replica.get("case", cid) is not None and b.client.replica.get("case", cid) is not None

    rebuilt = server.cli("rebuild").json()
    assert rebuilt["equal"] is True and rebuilt["chain_ok"] is True


# ---- 3. the same envelope twice, relayed and direct ----


def _open_answer_for(lap: Laptop, raw: bytes) -> dict[str, Any]:
    return lap.agent._open_answer(raw)


def test_the_same_envelope_twice_is_merged_once(server: Server, laptops: LaptopFactory) -> None:
    """The same envelope sent twice: merged once; the second answer says duplicate."""
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.note(case)
    a.agent.pack()
    [(seq, envelope, n_ops)] = a.agent.unacked()
    before = server.ledger_count()

    first = server.post("/api/v1/push", envelope)
    second = server.post("/api/v1/push", envelope)
    assert first.status_code == second.status_code == 200
    one, two = _open_answer_for(a, first.content), _open_answer_for(a, second.content)
    assert one["acks"] == [seq] and one["duplicate"] is False and one["applied"] == n_ops
    assert two["acks"] == [seq] and two["duplicate"] is True and two["applied"] == 0
    assert server.ledger_count() == before + 1
    assert server.scalar("SELECT COUNT(*) FROM ledger WHERE device=? AND device_seq=?", a.device_id, seq) == 1
    assert sorted(server.op_ids()) == sorted(a.written())

    # the laptop, which never saw those answers, syncs: acknowledged again, nothing doubled
    report = a.sync()
    assert report.duplicates == 1 and report.pushed_envelopes == 1
    assert a.outbox_all_acked()
    assert server.ledger_count() == before + 1
    assert a.digest() == server.digest()


@pytest.mark.parametrize("direct_first", [False, True])
def test_relayed_by_a_third_laptop_and_sent_directly_is_merged_once(
        server: Server, laptops: LaptopFactory, tmp_path: Path, direct_first: bool) -> None:
    """The same envelope relayed by a third laptop (as files, and over HTTP) and also sent
    directly: merged once; the relay can read nothing of what it carried."""
    a = laptops("a", VILLAGE_1)
    c = laptops("c", TOWN_E, level="township")  # the township laptop that carries
    case = a.new_case()
    a.visit(case)
    a.note(case)
    usb = tmp_path / "usb-a"
    files = a.agent.export_bundle(usb)
    assert [p.name for p in files] == [f"mq-{a.device_id}-00000001.mqe", f"mq-{a.device_id}-request.mqe"]
    carried = tmp_path / "carried-by-c"
    shutil.copytree(usb, carried)

    def relay_files() -> dict[str, Any]:
        return server.cli("import", str(carried)).json()

    if direct_first:
        assert a.sync().duplicates == 0
        report = relay_files()
        assert report["merged"] == 0 and report["duplicates"] == 1 and report["refused"] == []
    else:
        report = relay_files()
        assert report["merged"] == 1 and report["duplicates"] == 0 and report["requests"] == 1
        assert report["applied_ops"] == len(a.written())
        assert a.sync().duplicates == 1
    assert a.outbox_all_acked()

    # C relays the same bytes over HTTP too: accepted (the author's signature is what counts)
    c_transport = c.agent.transport()
    status, ctype, answer = c_transport.post("/api/v1/push", (carried / files[0].name).read_bytes(), "application/octet-stream")
    assert status == 200 and ctype.startswith("application/octet-stream")
    _, server_ed, server_node = c.agent._server_keys()
    with pytest.raises(env.EnvelopeError) as exc:  # sealed to A: the carrier cannot read it
        env.open(answer, recipient_key=c.client.keys.x25519,
                 sender_key=lambda s: server_ed if s == server_node else None)
    assert exc.value.code == "envelope.wrong_recipient"
    assert _open_answer_for(a, answer)["duplicate"] is True
    # and the files once more
    again = relay_files()
    assert again["merged"] == 0 and again["duplicates"] == 1

    assert server.scalar("SELECT COUNT(*) FROM ledger WHERE kind='device' AND device=?", a.device_id) == 1
    assert server.scalar("SELECT COUNT(*) FROM ledger WHERE device=? AND device_seq=1", a.device_id) == 1
    server_ops = server.op_ids()
    assert len(server_ops) == len(a.written()) and set(server_ops) == a.written()
    assert a.digest() == server.digest()
    # C (township above the village) receives A's case once
    c.sync()
    assert c.op_ids() == a.written()
    assert server.cli("rebuild").json()["equal"] is True


# ---- 6. scope: a village writing to another village's case ----


def test_a_village_laptop_writing_to_another_villages_case_is_quarantined(
        server: Server, laptops: LaptopFactory) -> None:
    """A village laptop writing to another village's case: quarantined and reported, the
    rest of its change set merged."""
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_2)
    foreign_case = a.new_case("东村的案件")
    a.sync()
    b.sync()
    assert b.client.replica.get("case", foreign_case) is None  # B never receives it
    assert not (b.op_ids() & a.written())

    own_case = b.new_case("西村的案件")
    (foreign_op,) = b.client.record([{
        "entity": "case", "entity_id": foreign_case, "case_id": foreign_case, "kind": "set",
        "values": {"title": "西村改了东村的案件"}, "base": {"title": None},
    }])
    own_note = b.note(own_case)  # behind the bad op in the same change set
    report = b.sync()
    assert report.pushed_envelopes == 1
    assert [(q["op_id"], q["code"]) for q in report.quarantined] == [(foreign_op.op_id, "sync.out_of_scope")]
    assert b.outbox_all_acked()
    server_ops = set(server.op_ids())
    assert foreign_op.op_id not in server_ops
    assert b.written() - {foreign_op.op_id} <= server_ops
    assert server.scalar("SELECT COUNT(*) FROM notes WHERE id=?", own_note) == 1
    assert server.scalar("SELECT title FROM cases WHERE id=?", foreign_case) == "东村的案件"
    a.sync()
    assert foreign_op.op_id not in a.op_ids()

    held = server.cli("quarantine", "list").json()
    assert len(held) == 1
    item = held[0]
    assert item["op_id"] == foreign_op.op_id and item["code"] == "sync.out_of_scope"
    assert item["device"] == b.device_id and item["case_id"] == foreign_case and item["status"] == "held"

    ledger_before = server.ledger_count()
    released = server.cli("quarantine", "release", str(item["id"]), "--by", "it.admin").json()
    assert released == {"ok": True, "released": 1}
    assert server.cli("quarantine", "list").json() == []
    assert server.cli("quarantine", "list", "--all").json()[0]["status"] == "released"
    assert server.ledger_count() == ledger_before + 1
    assert server.scalar("SELECT kind FROM ledger ORDER BY ledger_seq DESC LIMIT 1") == "release"
    assert foreign_op.op_id in server.op_ids()
    a.sync()
    assert foreign_op.op_id in a.op_ids()  # the released op reaches the case's village

    rebuilt = server.cli("rebuild").json()
    assert rebuilt["equal"] is True and rebuilt["chain_ok"] is True
    assert rebuilt["live_digest"] == server.digest()


# ---- 10. enrollment ----


def _recode(code: str, **changes: str) -> str:
    doc = json.loads(base64.urlsafe_b64decode(code[4:].encode()))
    doc.update(changes)
    return "MQ1." + base64.urlsafe_b64encode(canonical_json(doc).encode()).decode()


def test_enrollment_refusals(server: Server, laptops: LaptopFactory) -> None:
    """An expired code, a reused code, and a code whose pinned fingerprint was altered."""
    expired = server.enroll_code(VILLAGE_1, hours=0.00001)  # 36 ms
    time.sleep(0.2)
    x = laptops("x", VILLAGE_1, enroll=False)
    with pytest.raises(SyncError) as exc:
        x.agent.enroll(expired)
    assert exc.value.code == "enroll.code_expired"
    assert x.agent.server is None

    code = server.enroll_code(VILLAGE_1)
    y = laptops("y", VILLAGE_1, enroll=False)
    y.agent.enroll(code)
    assert y.agent.server is not None
    z = laptops("z", VILLAGE_1, enroll=False)
    with pytest.raises(SyncError) as exc:
        z.agent.enroll(code)
    assert exc.value.code == "enroll.code_used"
    assert z.agent.server is None
    # the laptop refused for an expired code enrolls with a fresh one
    x.agent.enroll(server.enroll_code(VILLAGE_1))
    assert x.agent.server is not None

    # the raw refusals, in the one error shape
    r = server.post("/api/v1/enroll", b'{"token": "00"}', "application/json")
    assert_error_body(r.status_code, r.content, code="sync.bad_request")
    assert r.status_code == 400
    r = server.post("/api/v1/enroll", canonical_json({
        "token": "0" * 32, "device_id": "0" * 16, "x25519": "00", "ed25519": "00", "node": VILLAGE_1,
        "proof": "00"}).encode(), "application/json")
    assert_error_body(r.status_code, r.content, code="enroll.unknown_code")
    assert r.status_code == 403

    codes = server.refusal_codes()
    assert {"enroll.code_expired", "enroll.code_used", "enroll.unknown_code"} <= set(codes)


def test_enrollment_refuses_a_server_whose_keys_differ_from_the_code(server: Server, laptops: LaptopFactory) -> None:
    genuine = server.enroll_code(VILLAGE_1)
    altered = _recode(genuine, s="0123456789abcdef")
    w = laptops("w", VILLAGE_1, enroll=False)
    with pytest.raises(SyncError) as exc:
        w.agent.enroll(altered)
    assert exc.value.code == "enroll.key_mismatch"
    assert w.agent.server is None  # it stores nothing
    assert w.client.meta("server") is None
    assert w.client.replica.conn.execute("SELECT COUNT(*) FROM sync_log").fetchone()[0] == 0
    with pytest.raises(SyncError) as exc:  # and it will not sync with anyone
        w.sync()
    assert exc.value.code == "sync.not_enrolled"

    # the same for an altered X25519 fingerprint
    v = laptops("v", VILLAGE_1, enroll=False)
    with pytest.raises(SyncError) as exc:
        v.agent.enroll(_recode(server.enroll_code(VILLAGE_1), x="fedcba9876543210"))
    assert exc.value.code == "enroll.key_mismatch"
    assert v.agent.server is None


def test_after_a_key_mismatch_a_fresh_genuine_code_still_enrolls(server: Server, laptops: LaptopFactory) -> None:
    w = laptops("w", VILLAGE_1, enroll=False)
    with pytest.raises(SyncError):
        w.agent.enroll(_recode(server.enroll_code(VILLAGE_1), s="0123456789abcdef"))
    info = w.agent.enroll(server.enroll_code(VILLAGE_1))
    assert info["node"]["code"] == VILLAGE_1


def test_enrollment_wrong_node_is_refused_by_the_laptop_and_by_the_server(
        server: Server, laptops: LaptopFactory) -> None:
    code = server.enroll_code(VILLAGE_1)
    u = laptops("u", VILLAGE_2, enroll=False)
    with pytest.raises(SyncError) as exc:
        u.agent.enroll(code)
    assert exc.value.code == "enroll.wrong_node"
    # the server refuses it too when a laptop claims another node than the code's
    doc = json.loads(base64.urlsafe_b64decode(code[4:].encode()))
    keys = u.client.keys
    from field_client.keystore import _raw_public

    x_hex = _raw_public(keys.x25519).hex()
    body = {"token": doc["token"], "device_id": keys.device_id, "x25519": x_hex,
            "ed25519": _raw_public(keys.ed25519).hex(), "node": VILLAGE_2,
            "proof": keys.ed25519.sign(f"enroll|{doc['token']}|{keys.device_id}|{x_hex}".encode()).hex()}
    r = server.post("/api/v1/enroll", canonical_json(body).encode(), "application/json")
    assert_error_body(r.status_code, r.content, code="enroll.wrong_node")
    # a forged proof
    body.update(node=VILLAGE_1, proof="00" * 64)
    r = server.post("/api/v1/enroll", canonical_json(body).encode(), "application/json")
    assert_error_body(r.status_code, r.content, code="enroll.bad_proof")
    # the code is still good for the right laptop
    t = laptops("t", VILLAGE_1, enroll=False)
    assert t.agent.enroll(code)["node"]["code"] == VILLAGE_1
    listed = {d["device_id"]: d for d in server.cli("device", "list").json()}
    assert t.device_id in listed and u.device_id not in listed
    assert listed[t.device_id]["node"] == VILLAGE_1 and listed[t.device_id]["status"] == "active"


# ---- 9. the OpenAPI document and the error shape ----


def _openapi(server: Server) -> dict[str, Any]:
    with requests.Session() as s:
        r = s.get(server.url + "/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200
    return r.json()


def test_openapi_lists_the_sync_endpoints(server: Server) -> None:
    spec = _openapi(server)
    assert spec["openapi"].startswith("3.")
    for path, method in (("/api/v1/push", "post"), ("/api/v1/pull", "post"), ("/api/v1/enroll", "post"),
                         ("/api/v1/ping", "get")):
        assert method in spec["paths"][path], path
    assert "ErrorBody" in spec["components"]["schemas"]
    error = spec["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"ok", "error"}


def test_openapi_document_is_valid(server: Server) -> None:
    from openapi_spec_validator import validate

    validate(_openapi(server))


def test_every_api_error_has_the_one_shape(server: Server, laptops: LaptopFactory) -> None:
    """Refusals that reach a program are {"ok": false, "error": {code, message, details}}."""
    cases = [
        ("post", "/api/v1/push", b"not an envelope", "application/octet-stream", "envelope.truncated", 400),
        ("post", "/api/v1/push", b"MQE2" + b"\0" * 100, "application/octet-stream", "envelope.bad_magic", 400),
        ("post", "/api/v1/push", b"{}", "application/json", "sync.bad_request", 400),
        ("post", "/api/v1/pull", b"x" * 10, "application/octet-stream", "envelope.truncated", 400),
        ("post", "/api/v1/enroll", b"[1, 2]", "application/json", "sync.bad_request", 400),
        ("get", "/api/v1/nothing-here", b"", "", "sync.not_found", 404),
        ("get", "/api/v1/push", b"", "", "sync.method_not_allowed", 405),
    ]
    with requests.Session() as s:
        for method, path, body, ctype, code, status in cases:
            headers = {"Content-Type": ctype} if ctype else {}
            r = s.request(method, server.url + path, data=body or None, headers=headers, timeout=10)
            assert r.status_code == status, (path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("application/json")
            assert_error_body(r.status_code, r.content, code=code)
        # too large: as an envelope (over 16 MiB), and as a body (over the envelope and its margin)
        for size, code in ((env.MAX_ENVELOPE + 100, "envelope.too_large"),
                           (env.MAX_ENVELOPE + 64 * 1024 + 1, "sync.too_large")):
            r = s.post(server.url + "/api/v1/push", data=b"MQE1" + bytes(size - 4),
                       headers={"Content-Type": "application/octet-stream"}, timeout=30)
            assert r.status_code == 413
            assert_error_body(r.status_code, r.content, code=code)
    assert {"envelope.truncated", "envelope.bad_magic", "sync.too_large"} <= set(server.refusal_codes())

    # the CLI's refusals in the same shape, exit 2
    for args, code in ((("device", "revoke", "0123456789abcdef"), "sync.not_found"),
                       (("quarantine", "release", "999"), "sync.not_found"),
                       (("device", "add", "--node", "999999999"), "sync.not_found"),
                       (("export-for", "0123456789abcdef", str(server.data.parent / "nowhere")), "sync.not_found")):
        res = server.cli(*args, check=False)
        assert res.rc == 2, (args, res)
        doc = res.json()
        assert set(doc) == {"ok", "error"} and doc["ok"] is False
        assert set(doc["error"]) == {"code", "message", "details"} and doc["error"]["code"] == code


# ---- a case newly in scope comes with its whole history ----


def test_a_case_routed_into_a_township_arrives_there_with_its_whole_history(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    west = laptops("west", TOWN_W, level="township")
    county = laptops("k", COUNTY, level="county")
    case = a.new_case("征地补偿款分配", category="complaint", subject="land_requisition")
    a.visit(case)
    a.note(case)
    a.sync()
    west.sync()
    assert west.client.replica.get("case", case) is None  # not its township
    county.sync()
    county.client.transition(case, "route", to_node=TOWN_W, reason="属西乡管辖")
    county.sync()
    assert server.scalar("SELECT node FROM cases WHERE id=?", case) == TOWN_W

    west.sync()
    case_ops = {r[0] for r in server.rows("SELECT op_id FROM ops WHERE case_id=?", case)}
    assert {op.op_id for op in west.client.replica.ops_for_case(case)} == case_ops
    row = west.client.replica.get("case", case)
    assert row is not None and row["node"] == TOWN_W and row["state"] == "routed"
    assert len(west.client.case_detail(case)["visits"]) == 1
    # what comes later comes once
    a.note(case, "村里补充材料。")
    a.sync()
    west.sync()
    assert {op.op_id for op in west.client.replica.ops_for_case(case)} == \
        {r[0] for r in server.rows("SELECT op_id FROM ops WHERE case_id=?", case)}
    assert west.digest() == server.digest()  # the only case in the county


# ---- a sequence number reused with other content ----


def test_a_laptop_restored_from_an_old_copy_reuses_a_sequence_number_and_is_refused(
        server: Server, laptops: LaptopFactory, tmp_path: Path) -> None:
    """A push whose (device, seq) is in the ledger with other bytes is refused (409) and
    merges nothing. (A laptop restored from a copy made before its last sync is in this
    state for good: see the report.)"""
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.client.close()
    backup = tmp_path / "a-backup"
    shutil.copytree(a.dir, backup)
    from field_client.store import FieldClient
    from field_client.sync import HttpTransport, SyncAgent

    a.extra_sessions.append(a.agent._transport.session)  # type: ignore[union-attr]
    a.client = FieldClient.open(a.dir, "password123")
    a.agent = SyncAgent(a.client, HttpTransport(server.url), retries=0)
    a.sync()
    ledger = server.ledger_count()

    restored = FieldClient.open(backup, "password123")
    try:
        agent = SyncAgent(restored, HttpTransport(server.url), retries=0)
        restored.add_record("note", case, {"text": "恢复后写的记录", "written_at": "2026-11-18T10:00:00+08:00"})
        agent.pack()
        seqs = [s for s, _, _ in agent.unacked()]
        assert seqs == [1]
        r = server.post("/api/v1/push", agent.unacked()[0][1])
        assert r.status_code == 409
        assert_error_body(r.status_code, r.content, code="sync.seq_reused")
        with pytest.raises(SyncError) as exc:
            agent.sync()
        assert exc.value.code == "sync.seq_reused"
        agent._transport.session.close()  # type: ignore[union-attr]
    finally:
        restored.close()
    assert server.ledger_count() == ledger
    assert set(server.op_ids()) == a.written()


def test_a_village_laptop_cannot_take_another_villages_case_by_recreating_it(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_2)
    case = a.new_case("东村的案件")
    secret = a.note(case, "东村的内部记录")
    a.sync()
    b.sync()
    (hijack,) = b.client.record([{
        "entity": "case", "entity_id": case, "case_id": case, "kind": "create",
        "values": {"case_no": "330102102-X-2026-0001", "title": "西村的案件", "category": "dispute",
                   "subject": "neighbour", "channel": "visit", "origin_node": VILLAGE_2,
                   "received_at": "2026-11-18T10:00:00+08:00", "first_receiver": "user.b",
                   "level": "village", "node": VILLAGE_2},
    }])
    report = b.sync()
    assert [(q["op_id"], q["code"]) for q in report.quarantined] == [(hijack.op_id, "sync.out_of_scope")]
    assert server.rows("SELECT origin_node, node, title FROM cases WHERE id=?", case) == [
        (VILLAGE_1, VILLAGE_1, "东村的案件")]
    assert b.client.replica.get("note", secret) is None
    assert not (a.written() & b.op_ids())


def test_an_enrollment_whose_answer_was_lost_can_be_retried(server: Server, laptops: LaptopFactory) -> None:
    from tests.end_to_end.proxy import CuttingProxy

    lap = laptops("lost", VILLAGE_1, enroll=False)
    code = server.enroll_code(VILLAGE_1)
    with CuttingProxy(server.port, cut_down=60) as proxy:
        agent = lap.agent_via(proxy.url)
        with pytest.raises(SyncError) as exc:
            agent.enroll(code)
        assert exc.value.code == "sync.unreachable" and proxy.cuts == 1
    assert lap.agent.server is None  # the laptop stored nothing
    assert lap.device_id in {d["device_id"] for d in server.cli("device", "list").json()}  # the server did
    try:
        lap.agent.enroll(code)
    except SyncError as first:
        assert first.code == "enroll.code_used"
        lap.agent.enroll(server.enroll_code(VILLAGE_1))  # a fresh code from IT
    assert lap.agent.server is not None


# ---- many ops: change sets in chunks, pulls in pages ----


def test_many_ops_travel_in_chunks_and_pages(server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    cases = [a.new_case(f"纠纷{i}") for i in range(110)]  # 3 ops each: 330 ops
    for case in cases[:40]:
        a.note(case)
    report = a.sync()
    assert report.pushed_envelopes == 4 and report.pushed_ops == 370
    assert server.rows("SELECT device_seq FROM ledger WHERE device=? ORDER BY device_seq", a.device_id) == [
        (1,), (2,), (3,), (4,)]
    pulled = b.sync()
    assert pulled.pulled_ops == 370
    assert b.op_ids() == a.written() and b.digest() == a.digest() == server.digest()
    status = b.agent.status()
    assert status["pending_ops"] == 0 and status["pull_cursor"] == pulled.cursor == 370

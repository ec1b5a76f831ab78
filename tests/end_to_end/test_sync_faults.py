"""Sync under faults, against a real `sync-server serve` process (docs/sync.md, docs/protocol.md).

Flipped bytes, unknown/revoked/misaddressed/forged senders, connections cut by a proxy
at many byte offsets in both directions, concurrent duplicates, and a tampered ledger.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from field_client.sync import Erased, SyncError
from schema import envelope as env
from schema.ops import ChangeSet
from sync_server.keys import load as load_server_keys
from sync_server.keys import pub_hex
from tests.end_to_end.conftest import OCTET, VILLAGE_1, LaptopFactory, Server, assert_error_body
from tests.end_to_end.proxy import CuttingProxy

# ---- 2. one byte flipped anywhere ----


def test_one_flipped_byte_anywhere_is_refused_and_changes_nothing(server: Server, laptops: LaptopFactory) -> None:
    """One byte flipped anywhere in an envelope: refused with a code; ledger and state unchanged."""
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    a.sync()
    a.visit(case)
    a.note(case)
    a.agent.pack()
    [(seq, envelope, n_ops)] = a.agent.unacked()
    size = len(envelope)
    positions = sorted(set(range(0, size, 7)) | set(range(80)) | set(range(size - 80, size)))
    ledger0, digest0 = server.ledger_count(), server.digest()
    refusals0 = len(server.refusal_codes())

    codes: Counter[str] = Counter()
    with requests.Session() as s:
        for i in positions:
            bad = bytearray(envelope)
            bad[i] ^= (0x01, 0x80, 0xFF)[i % 3]
            r = s.post(server.url + "/api/v1/push", data=bytes(bad), headers={"Content-Type": OCTET}, timeout=10)
            assert r.headers["Content-Type"].startswith("application/json"), (i, r.status_code)
            err = assert_error_body(r.status_code, r.content, prefixes=("envelope.", "sync."))
            codes[err["code"]] += 1

    assert server.ledger_count() == ledger0
    assert server.digest() == digest0
    assert len(server.refusal_codes()) == refusals0 + len(positions)  # every refusal is logged
    assert codes["envelope.bad_signature"] > 0 and codes["envelope.bad_magic"] > 0
    assert codes["envelope.truncated"] > 0 and codes["envelope.bad_header"] > 0
    assert set(codes) <= {"envelope.bad_magic", "envelope.truncated", "envelope.bad_header",
                          "envelope.bad_signature", "envelope.too_large", "sync.unknown_device"}, codes

    # the untouched envelope still goes through, once
    report = a.sync()
    assert report.pushed_envelopes == 1 and report.duplicates == 0
    assert server.ledger_count() == ledger0 + 1
    assert a.digest() == server.digest()


# ---- 4. unknown, revoked, misaddressed, forged ----


def _changeset(lap, seq: int) -> ChangeSet:
    ops = tuple(lap.client.sealer.open_op(op) for _, op in lap.client.replica.ops())
    return ChangeSet(lap.device_id, seq, ops)


def test_unknown_revoked_misaddressed_and_forged_envelopes_are_refused_with_distinct_codes(
        server: Server, laptops: LaptopFactory) -> None:
    """Unknown device, revoked device, an envelope sealed to another server, a forged
    signature: refused with distinct codes, each logged in ``refusals``."""
    keys = load_server_keys(server.data)
    server_x = X25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex(keys.x25519)))
    seen: dict[str, str] = {}

    # unknown device: a laptop that never enrolled, pointed at this server by hand
    stranger = laptops("stranger", VILLAGE_1, enroll=False)
    stranger.client._set_meta("server", json.dumps({
        "url": server.url, "node_id": keys.node_id, "x25519": pub_hex(keys.x25519),
        "ed25519": pub_hex(keys.ed25519), "node": {"code": VILLAGE_1}, "ancestors": [], "subtree": [VILLAGE_1]}))
    stranger.new_case()
    stranger.agent.pack()
    r = server.post("/api/v1/push", stranger.agent.unacked()[0][1])
    assert r.status_code == 401
    seen["unknown"] = assert_error_body(r.status_code, r.content)["code"]
    with pytest.raises(SyncError) as exc:
        stranger.sync()
    assert exc.value.code == seen["unknown"] == "sync.unknown_device"
    assert not stranger.outbox_all_acked()

    # an envelope sealed to another server's key, by an enrolled laptop
    e = laptops("e", VILLAGE_1)
    e.new_case()
    other_server = X25519PrivateKey.generate().public_key()
    misaddressed = env.seal_changeset(_changeset(e, 1), signing_key=e.client.keys.ed25519, recipient=other_server)
    r = server.post("/api/v1/push", misaddressed)
    assert r.status_code == 400
    seen["wrong_recipient"] = assert_error_body(r.status_code, r.content, code="envelope.wrong_recipient")["code"]

    # a forged signature: the laptop's id in the header, signed with another key
    forged = env.seal_changeset(_changeset(e, 1), signing_key=Ed25519PrivateKey.generate(), recipient=server_x)
    r = server.post("/api/v1/push", forged)
    assert r.status_code == 400
    seen["forged"] = assert_error_body(r.status_code, r.content, code="envelope.bad_signature")["code"]
    assert server.op_ids() == []  # none of it merged
    e.sync()  # the genuine one goes through, as seq 1
    assert set(server.op_ids()) == e.written()

    # revoked: refused with 403 and a signed erase order, which the laptop obeys
    rv = laptops("rv", VILLAGE_1)
    rv_case = rv.new_case()
    rv.sync()
    assert server.cli("device", "revoke", rv.device_id, "--reason", "laptop stolen").json()["ok"] is True
    devices = {d["device_id"]: d for d in server.cli("device", "list").json()}
    assert devices[rv.device_id]["status"] == "revoked"
    late = rv.note(rv_case, "吊销后写的记录")
    rv.agent.pack()
    r = server.post("/api/v1/push", rv.agent.unacked()[0][1])
    assert r.status_code == 403
    err = assert_error_body(r.status_code, r.content, code="sync.device_revoked")
    seen["revoked"] = err["code"]
    assert isinstance(err["details"], dict) and err["details"].get("erase_order")
    with pytest.raises(Erased):
        rv.sync()
    assert sorted(p.name for p in rv.dir.iterdir()) == ["ERASED.txt"]
    assert late not in server.op_ids()  # refused, never merged
    assert server.scalar("SELECT COUNT(*) FROM cases WHERE id=?", rv_case) == 1  # its earlier work stays

    assert len(set(seen.values())) == 4, seen
    logged = server.rows("SELECT code, device FROM refusals")
    codes = {c for c, _ in logged}
    assert set(seen.values()) <= codes
    assert ("sync.unknown_device", stranger.device_id) in logged
    assert ("sync.device_revoked", rv.device_id) in logged
    assert ("envelope.bad_signature", e.device_id) in logged
    assert ("envelope.wrong_recipient", e.device_id) in logged
    assert server.cli("rebuild").json()["equal"] is True


# ---- 5. a connection cut after N bytes, for many N ----


def _spread(lo: int, hi: int, n: int) -> list[int]:
    return sorted({lo + (hi - lo) * k // (n - 1) for k in range(n)})


def test_connections_cut_after_n_bytes_lose_and_double_nothing(server: Server, laptops: LaptopFactory) -> None:
    """A connection that a proxy on loopback cuts after N bytes, for many N, either way: the
    next sync completes with no duplicate and no loss."""
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    case = a.new_case()
    a.sync()
    b.sync()

    def work(i: int) -> None:
        a.note(case, f"第{i}次回访：当事人情绪稳定。")
        a.client.edit("case", case, {"title": f"宅基地边界纠纷（第{i}稿）"})
        b.note(case, f"西组第{i}次记录。")
        b.sync()  # so that A's pull has something to carry

    # measure one round's traffic through a plain forwarder
    work(0)
    with CuttingProxy(server.port) as plain:
        agent = a.agent_via(plain.url)
        agent.sync()
        up_total, down_total = plain.bytes_up, plain.bytes_down
    assert a.outbox_all_acked() and up_total > 500 and down_total > 500

    rounds = [("up", n) for n in _spread(10, int(up_total * 0.9), 20)]
    rounds += [("down", n) for n in _spread(10, int(down_total * 0.9), 20)]
    failures: Counter[str] = Counter()
    resent: Counter[str] = Counter()
    for i, (direction, n) in enumerate(rounds, start=1):
        work(i)
        cut = {"cut_up": n} if direction == "up" else {"cut_down": n}
        with CuttingProxy(server.port, **cut) as proxy:
            agent = a.agent_via(proxy.url)
            try:
                agent.sync()
            except SyncError as exc:
                failures[exc.code] += 1
            else:
                pytest.fail(f"round {i}: a sync cut {direction} after {n} bytes completed")
            finally:
                agent._transport.session.close()  # type: ignore[union-attr]
            assert proxy.cuts == 1, (i, direction, n, proxy.connections)
        report = a.sync()  # directly: completes
        assert report.quarantined == []
        if report.duplicates:  # the server had merged it; only its answer was lost
            resent[direction] += 1
        assert a.outbox_all_acked(), (i, direction, n)
    assert set(failures) <= {"sync.unreachable", "sync.timeout"}, failures
    assert sum(failures.values()) == len(rounds)
    assert resent["down"] > 0, resent  # answers lost after the server had committed

    b.sync()
    a.sync()
    dev = a.device_id
    # every op exactly once on the server, every envelope exactly once in the ledger
    server_a_ops = [r[0] for r in server.rows("SELECT op_id FROM ops WHERE device=?", dev)]
    assert len(server_a_ops) == len(set(server_a_ops)) == len(a.written())
    assert set(server_a_ops) == a.written()
    ledger_seqs = [r[0] for r in server.rows(
        "SELECT device_seq FROM ledger WHERE kind='device' AND device=? ORDER BY device_seq", dev)]
    packed = [r[0] for r in a.client.replica.conn.execute("SELECT seq FROM outgoing ORDER BY seq")]
    assert ledger_seqs == packed == list(range(1, len(packed) + 1))
    # nothing lost on the way down either: A holds everything of its village, as do B and the server
    assert a.op_ids() == set(server.op_ids()) == b.op_ids()
    assert a.digest() == b.digest() == server.digest()
    assert server.cli("rebuild").json()["equal"] is True


# ---- concurrent duplicates (a relay and the author at the same moment) ----


def _post_concurrently(server: Server, body: bytes, n: int) -> list[requests.Response]:
    barrier = threading.Barrier(n)
    out: list[requests.Response] = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait()
        with requests.Session() as s:
            r = s.post(server.url + "/api/v1/push", data=body, headers={"Content-Type": OCTET}, timeout=30)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out) == n
    return out


def test_the_same_envelope_posted_concurrently_is_merged_once(server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    for i in range(4):
        a.note(case, f"记录{i}")
        a.agent.pack()
        seq, envelope, _ = a.agent.unacked()[-1]
        _post_concurrently(server, envelope, 4)
        assert server.scalar("SELECT COUNT(*) FROM ledger WHERE device=? AND device_seq=?", a.device_id, seq) == 1
    a.sync()
    assert a.outbox_all_acked()
    ops = server.op_ids()
    assert len(ops) == len(set(ops)) == len(a.written())
    assert a.digest() == server.digest()


def test_the_same_envelope_posted_concurrently_is_acknowledged_to_every_sender(
        server: Server, laptops: LaptopFactory) -> None:
    a = laptops("a", VILLAGE_1)
    case = a.new_case()
    for i in range(5):
        a.note(case, f"记录{i}")
        a.agent.pack()
        seq, envelope, _ = a.agent.unacked()[-1]
        answers = _post_concurrently(server, envelope, 4)
        assert [r.status_code for r in answers] == [200] * 4, [r.text[:300] for r in answers]
        opened = [a.agent._open_answer(r.content) for r in answers]
        assert sorted(o["duplicate"] for o in opened) == [False, True, True, True]
        assert all(o["acks"] == [seq] for o in opened)


# ---- 8. rebuild, and a tampered ledger ----


def _busy_server(server: Server, laptops: LaptopFactory) -> list[tuple[int, str]]:
    a = laptops("a", VILLAGE_1)
    b = laptops("b", VILLAGE_1)
    case = a.new_case()
    a.sync()
    b.sync()
    a.client.edit("case", case, {"title": "甲稿"})
    b.client.edit("case", case, {"title": "乙稿"})
    b.note(case)
    a.sync()
    b.sync()
    a.sync()
    return [(r[0], r[1]) for r in server.rows("SELECT ledger_seq, kind FROM ledger ORDER BY ledger_seq")]


def _tamper(server: Server, sql: str, *params: object) -> None:
    conn = sqlite3.connect(server.data / "server.db", timeout=10)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def test_rebuild_reports_equal_then_refuses_a_tampered_ledger(server: Server, laptops: LaptopFactory) -> None:
    entries = _busy_server(server, laptops)
    assert len(entries) == 3
    ok = server.cli("rebuild")
    report = ok.json()
    assert ok.rc == 0 and report["equal"] is True and report["chain_ok"] is True
    assert report["chain_entries"] == 3 and report["live_digest"] == server.digest()
    text = server.cli("rebuild", json_out=False)
    assert text.rc == 0 and "一致" in text.out

    # a ledger row's envelope bytes changed behind the server's back
    (envelope,) = server.rows("SELECT envelope FROM ledger WHERE ledger_seq=2")[0]
    bad = bytearray(envelope)
    bad[len(bad) // 2] ^= 0x01
    _tamper(server, "UPDATE ledger SET envelope=? WHERE ledger_seq=2", bytes(bad))
    tampered = server.cli("rebuild", check=False)
    assert tampered.rc != 0
    assert "Traceback" not in tampered.out + tampered.err

    # a row's recorded hash changed: the chain check names the entry
    _tamper(server, "UPDATE ledger SET envelope=? WHERE ledger_seq=2", envelope)
    assert server.cli("rebuild").json()["equal"] is True
    _tamper(server, "UPDATE ledger SET hash=? WHERE ledger_seq=3", "0" * 64)
    broken = server.cli("rebuild", check=False)
    assert broken.rc == 1
    doc = broken.json()
    assert doc["chain_ok"] is False and doc["chain_first_bad"] == 3
    assert "3" in server.cli("rebuild", check=False, json_out=False).out


def test_rebuild_names_the_ledger_entry_whose_envelope_was_altered(server: Server, laptops: LaptopFactory) -> None:
    _busy_server(server, laptops)
    (envelope,) = server.rows("SELECT envelope FROM ledger WHERE ledger_seq=2")[0]
    bad = bytearray(envelope)
    bad[len(bad) // 2] ^= 0x01
    _tamper(server, "UPDATE ledger SET envelope=? WHERE ledger_seq=2", bytes(bad))
    tampered = server.cli("rebuild", check=False)
    assert tampered.rc == 1
    doc = tampered.json()
    assert doc["chain_ok"] is False and doc["chain_first_bad"] == 2 and doc["equal"] is False

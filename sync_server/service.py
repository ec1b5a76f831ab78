"""The sync service: enrollment, receiving change sets, answering pulls, the server's own ops.

Transport-free: the HTTP API (sync_server.api) and bundle import (sync_server.bundles)
both call it with bytes and get bytes back. Every refusal is logged in ``refusals``
before the error is raised. docs/sync.md is the contract.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from conflict.author import make_op
from conflict.hlc import receive
from conflict.replica import Replica
from schema import envelope as env
from schema.errors import MinqingError, OpInvalid
from schema.ops import SCHEMA_VERSION, ChangeSet, Op, canonical_json
from schema.rules import Rules
from schema.stamp import parse
from schema.validation import check_op, partition_ops
from sync_server import backup, ledger, lifecycle
from sync_server.errors import (
    BadRequest,
    Conflict,
    DeviceRevoked,
    EnrollRefused,
    NotFound,
    UnknownDevice,
)
from sync_server.keys import pub_hex
from sync_server.merge import CaseInfo, Plan, hold_reused, in_scope, plan_changeset
from sync_server.store import ServerStore

ENROLL_PREFIX = "MQ1."
DEFAULT_PULL_LIMIT = 500
MAX_PULL_LIMIT = 5000
REBUILD_BATCH = 500  # ledger entries per transaction of a rebuild
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _refuse(store: ServerStore, exc: MinqingError, *, device: str | None, seq: int | None,
            size: int | None, carrier: str | None) -> MinqingError:
    with store.transaction():
        store.log_refusal(exc.code, exc.message, device=device, device_seq=seq, size=size, carrier=carrier)
    exc.logged = True  # type: ignore[attr-defined]
    return exc


def _chunked(items: list[str], n: int) -> list[list[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


@dataclass(frozen=True)
class PushResult:
    answer: bytes
    applied: int
    duplicate: bool
    quarantined: list[dict[str, Any]]
    cases: set[str]


class SyncService:
    """Everything the sync API does, over a ServerStore."""

    def __init__(self, store: ServerStore, *, rules: Rules | None = None) -> None:
        self.store = store
        self.keys = store.keys
        self.rules = rules  # with rules, each merge runs the deadline sweep for the cases it touched

    # ---- keys of the parties ----

    def sender_key(self, sender: str, seq: int | None = None) -> Ed25519PublicKey | None:
        """The key that signs ``sender``'s envelope ``seq`` (a retired key for change sets packed
        before a rotation, sync_server.lifecycle); the current key for requests (``seq`` None)."""
        if sender == self.keys.node_id:
            return self.keys.ed25519.public_key()
        dev = self.store.device(sender)
        if dev is None:
            return None
        key = lifecycle.key_for(self.store.conn, sender, seq) or dev["ed25519"]
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))

    def device_x25519(self, device: Mapping[str, Any]) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(device["x25519"]))

    # ---- enrollment ----

    def create_enroll_code(self, node: str, *, url: str, user: str | None = None, hours: float = 72) -> str:
        """A one-time enrollment code for a laptop at ``node`` (docs/sync.md)."""
        if self.store.node(node) is None:
            raise NotFound(f"没有这个单位代码 {node} (unknown node; import the jurisdiction first)")
        token = os.urandom(16).hex()
        now = self.store.now_ms()
        exp = now + int(hours * 3600 * 1000)
        with self.store.transaction():
            self.store.conn.execute(
                "INSERT INTO enroll_codes(token_hash, node, user, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                (hashlib.sha256(token.encode()).hexdigest(), node, user, now, exp),
            )
        doc = {"url": url, "token": token, "node": node, "x": self.keys.x_fingerprint,
               "s": self.keys.s_fingerprint, "exp": exp}
        return ENROLL_PREFIX + b64(canonical_json(doc).encode())

    def enroll(self, body: Mapping[str, Any], *, carrier: str | None = None) -> dict[str, Any]:
        """Register a device from its enrollment request; the answer pins the server's keys."""
        try:
            return self._enroll(body)
        except MinqingError as exc:
            raise _refuse(self.store, exc, device=str(body.get("device_id"))[:40] if isinstance(body, Mapping) else None,
                          seq=None, size=None, carrier=carrier) from None

    def _enroll(self, body: Mapping[str, Any]) -> dict[str, Any]:
        need = ("token", "device_id", "x25519", "ed25519", "node", "proof")
        if not isinstance(body, Mapping) or any(not isinstance(body.get(k), str) for k in need):
            raise BadRequest("enroll needs token, device_id, x25519, ed25519, node and proof (strings)")
        token_hash = hashlib.sha256(body["token"].encode()).hexdigest()
        row = self.store.conn.execute(
            "SELECT node, user, expires_ms, used_ms, used_by FROM enroll_codes WHERE token_hash=?", (token_hash,)
        ).fetchone()
        if row is None:
            raise EnrollRefused("注册码无效 (unknown enrollment code)", code="enroll.unknown_code")
        node, user, expires, used, used_by = row
        try:
            ed = Ed25519PublicKey.from_public_bytes(bytes.fromhex(body["ed25519"]))
            X25519PublicKey.from_public_bytes(bytes.fromhex(body["x25519"]))
            message = f"enroll|{body['token']}|{body['device_id']}|{body['x25519']}".encode()
            ed.verify(bytes.fromhex(body["proof"]), message)
        except Exception as exc:  # noqa: BLE001 - any failure of the proof is one refusal
            raise EnrollRefused("设备证明无效 (the device's proof does not verify)", code="enroll.bad_proof") from exc
        if hashlib.sha256(bytes.fromhex(body["ed25519"])).hexdigest()[:16] != body["device_id"]:
            raise EnrollRefused("设备编号与密钥不符 (device id does not match its key)", code="enroll.bad_proof")
        existing = self.store.device(body["device_id"])
        if existing is not None:
            # The same device with the same keys asking again (its answer was lost, or it
            # refused a mismatching server and was given a new code): answer again.
            same = existing["x25519"] == body["x25519"] and existing["node"] == node
            if existing["status"] == "revoked":
                raise EnrollRefused("该设备已被吊销 (this device has been revoked)", code="enroll.device_revoked")
            if not same:
                raise EnrollRefused("该设备已注册 (this device is already enrolled)", code="enroll.already_enrolled")
            if used_by == body["device_id"]:
                return self._enroll_answer(body["device_id"], node)
        if used is not None:
            raise EnrollRefused("注册码已被使用 (this enrollment code has been used)", code="enroll.code_used")
        if self.store.now_ms() > expires:
            raise EnrollRefused("注册码已过期，请找 IT 重新生成 (the code has expired)", code="enroll.code_expired")
        if body["node"] != node:
            raise EnrollRefused(
                f"笔记本的单位 {body['node']} 与注册码的单位 {node} 不一致 (the laptop's node differs from the code's)",
                code="enroll.wrong_node",
            )
        if existing is not None:
            with self.store.transaction():
                self.store.conn.execute("UPDATE enroll_codes SET used_ms=?, used_by=? WHERE token_hash=?",
                                        (self.store.now_ms(), body["device_id"], token_hash))
            return self._enroll_answer(body["device_id"], node)
        info = self.store.node(node)
        assert info is not None
        now = self.store.now_ms()
        with self.store.transaction():
            self.store.conn.execute(
                "INSERT INTO devices(device_id, node, level, user, x25519, ed25519, enrolled_ms, app_version, last_contact_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (body["device_id"], node, info["level"], user or body.get("user"), body["x25519"], body["ed25519"],
                 now, str(body.get("app_version", ""))[:40], now),
            )
            self.store.conn.execute(
                "UPDATE enroll_codes SET used_ms=?, used_by=? WHERE token_hash=?", (now, body["device_id"], token_hash),
            )
        return self._enroll_answer(body["device_id"], node)

    def _enroll_answer(self, device_id: str, node: str) -> dict[str, Any]:
        info = self.store.node(node)
        return {
            "ok": True,
            "device_id": device_id,
            "node": info,
            "ancestors": self.store.ancestors(node)[1:],
            "subtree": sorted(self.store.subtree(node)),
            "server": {"node_id": self.keys.node_id, "x25519": pub_hex(self.keys.x25519.public_key()),
                       "ed25519": pub_hex(self.keys.ed25519.public_key())},
            "server_time_ms": self.store.now_ms(),
        }

    # ---- push ----

    def _known_sender(self, header: Mapping[str, Any], *, size: int, carrier: str | None) -> dict[str, Any]:
        dev = self.store.device(header["sender"])
        if dev is None:
            raise _refuse(self.store, UnknownDevice(f"unknown device {str(header['sender'])[:40]}"),
                          device=str(header["sender"])[:40], seq=header.get("seq"), size=size, carrier=carrier)
        return dev

    def _not_revoked(self, dev: Mapping[str, Any], header: Mapping[str, Any], *, size: int,
                     carrier: str | None) -> None:
        """Refuse a revoked device (after its signature verified), with a signed erase order;
        and a replaced one (its sequence is closed, docs/audit.md)."""
        lifecycle.refuse_if_replaced(self, dev, header, size=size, carrier=carrier)
        if dev["status"] != "revoked":
            return
        order = self.erase_order(dev)
        with self.store.transaction():
            self.store.conn.execute("UPDATE devices SET erase_sent_ms=? WHERE device_id=?",
                                    (self.store.now_ms(), dev["device_id"]))
        raise _refuse(
            self.store,
            DeviceRevoked("该设备已被吊销，需清除本地数据 (this device has been revoked; it must erase its data)",
                          details={"erase_order": b64(order)}),
            device=dev["device_id"], seq=header.get("seq"), size=size, carrier=carrier,
        )

    def _check_sender(self, data: bytes, header: Mapping[str, Any], *, size: int,
                      carrier: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """A known, verified, not revoked sender: (device row, opened payload)."""
        dev = self._known_sender(header, size=size, carrier=carrier)
        try:
            payload = env.open(data, recipient_key=self.keys.x25519, sender_key=self.sender_key).payload
        except MinqingError as exc:
            raise _refuse(self.store, exc, device=dev["device_id"], seq=header.get("seq"), size=size,
                          carrier=carrier) from None
        self._not_revoked(dev, header, size=size, carrier=carrier)
        return dev, payload

    def receive(self, data: bytes, *, carrier: str | None = None) -> PushResult:
        """Take one change-set envelope: ledger, quarantine, merge, in one transaction; answer."""
        size = len(data) if isinstance(data, bytes | bytearray) else None
        try:
            header, _ = env.read_header(data)
        except env.EnvelopeError as exc:
            raise _refuse(self.store, exc, device=None, seq=None, size=size, carrier=carrier) from None
        dev = self._known_sender(header, size=size or 0, carrier=carrier)
        try:
            if header["type"] != "changeset":
                raise BadRequest("expected a changeset envelope", code="sync.bad_request")
            sealed = env.open(data, recipient_key=self.keys.x25519,
                              sender_key=lambda s: self.sender_key(s, header.get("seq")))
            cs, bad = env.changeset_from(sealed)
        except MinqingError as exc:
            raise _refuse(self.store, exc, device=dev["device_id"], seq=header.get("seq"), size=size,
                          carrier=carrier) from None
        self._not_revoked(dev, header, size=size or 0, carrier=carrier)
        digest = hashlib.sha256(data).hexdigest()
        raw_ops = sealed.payload.get("ops", [])
        with self.store.transaction():
            # the check and the append under one write lock: two copies arriving together
            # (a relay and the author) give one merge and one repeated acknowledgement
            existing = ledger.find(self.store.conn, dev["device_id"], cs.seq)
            if existing is None:
                seq = ledger.append(self.store.conn, kind="device", device=dev["device_id"], device_seq=cs.seq,
                                    envelope=bytes(data), received_ms=self.store.now_ms())
                plan = self._plan(cs, bad, raw_ops, dev)
                before = self.store.max_op_seq()
                result = self.store.replica.apply_in_transaction(plan.apply, set_aside_reused=True)
                hold_reused(plan, result.reused)
                self.store.hold(plan.hold, seq, dev["device_id"])
                self.store.note_merged(seq, before)
                self._observe(plan.apply)
                released = self._release_waiting(result.cases)
            self._touch(dev["device_id"], seq=cs.seq)
        if existing is not None:
            if existing.sha256 != digest:
                raise _refuse(self.store, Conflict(
                    f"序号 {cs.seq} 已用于另一份数据 (sequence {cs.seq} was already used for different content)",
                    code="sync.seq_reused"), device=dev["device_id"], seq=cs.seq, size=size, carrier=carrier)
            return PushResult(self._answer(dev, {"acks": [cs.seq], "duplicate": True, "applied": 0,
                                                 "quarantined": []}), 0, True, [], set())
        self._after_merge(result.cases)
        quarantined = [{"op_id": raw.get("op_id"), "code": code, "message": msg} for raw, code, msg in plan.hold]
        answer = self._answer(dev, {"acks": [cs.seq], "duplicate": False, "applied": len(result.applied),
                                    "quarantined": quarantined})
        return PushResult(answer, len(result.applied) + released, False, quarantined, result.cases)

    def _plan(self, cs: ChangeSet, bad: list[tuple[int, OpInvalid]], raw_ops: list[Any], dev: Mapping[str, Any]) -> Plan:
        dev = lifecycle.with_authors(self.store.conn, dev)  # a re-enrolled laptop resends its old id's ops
        return plan_changeset(cs, bad, raw_ops, dev, self.store.subtree(dev["node"]), self._case_lookup(self.store.conn))

    @staticmethod
    def _case_lookup(conn: Any):  # type: ignore[no-untyped-def]
        def lookup(ids: Iterable[str]) -> dict[str, CaseInfo]:
            ids = list(ids)
            out: dict[str, CaseInfo] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = f"SELECT id, origin_node, node FROM cases WHERE id IN ({', '.join('?' * len(chunk))})"
                out.update({r[0]: (r[1], r[2]) for r in conn.execute(q, chunk)})
            return out

        return lookup

    def _observe(self, ops: Iterable[Op]) -> None:
        last = self.store.hlc_last()
        now = self.store.now_ms()
        flags = []
        for op in ops:
            stamp = parse(op.stamp)
            last, far = receive(last, stamp, now, self.keys.node_id)
            if far:
                flags.append((op.op_id, "far_ahead", now))
        if last is not None:
            self.store.set_meta("hlc_last", last.encode())
        if flags:
            self.store.conn.executemany("INSERT OR IGNORE INTO op_flags(op_id, flag, at_ms) VALUES (?, ?, ?)", flags)

    def _touch(self, device_id: str, *, seq: int | None = None, offset_ms: int | None = None) -> None:
        now = self.store.now_ms()
        self.store.conn.execute("UPDATE devices SET last_contact_ms=? WHERE device_id=?", (now, device_id))
        if seq is not None:
            self.store.conn.execute("UPDATE devices SET last_seq=MAX(last_seq, ?) WHERE device_id=?", (seq, device_id))
        if offset_ms is not None:
            self.store.conn.execute("UPDATE devices SET clock_offset_ms=? WHERE device_id=?", (offset_ms, device_id))

    def _release_waiting(self, cases: set[str]) -> int:
        """Apply ops held as ``sync.case_unknown`` whose case has now arrived within scope."""
        if not cases:
            return 0
        held = [
            q
            for chunk in _chunked(sorted(cases), 500)
            for q in self.store.quarantined("held", code="sync.case_unknown", case_ids=chunk)
        ]
        if not held:
            return 0
        lookup = self._case_lookup(self.store.conn)
        infos = lookup({q["case_id"] for q in held})
        ready = []
        for q in held:
            dev = self.store.device(q["device"])
            if dev and q["case_id"] in infos and in_scope(infos[q["case_id"]], self.store.subtree(dev["node"])):
                ready.append(q)
        if ready:
            self._release_in_transaction(ready, by="auto")
        return len(ready)

    def _release_in_transaction(self, items: list[dict[str, Any]], *, by: str) -> None:
        ops, bad = partition_ops([q["op"] for q in items])
        if bad:
            raise BadRequest(f"{len(bad)} held op(s) are invalid and cannot be released", code="sync.release_invalid")
        payload = {"device": self.keys.node_id, "seq": 0, "schema_version": SCHEMA_VERSION,
                   "ops": [op.to_dict() for op in ops], "released": [q["id"] for q in items], "by": by}
        sealed = env.seal(payload, type="answer", sender=self.keys.node_id, seq=0,
                          signing_key=self.keys.ed25519, recipient=self.keys.x25519.public_key())
        n = self._next_server_seq()
        seq = ledger.append(self.store.conn, kind="release", device=self.keys.node_id, device_seq=n, envelope=sealed,
                            received_ms=self.store.now_ms())
        before = self.store.max_op_seq()
        self.store.replica.apply_in_transaction(ops)
        self.store.note_merged(seq, before)
        self.store.conn.executemany(
            "UPDATE quarantine SET status='released', released_ms=?, released_by=? WHERE id=?",
            [(self.store.now_ms(), by, q["id"]) for q in items],
        )

    def release(self, ids: Iterable[int], *, by: str) -> int:
        """An administrator releases held ops: merged, and the release recorded in the ledger."""
        wanted = set(ids)
        items = [q for q in self.store.quarantined("held") if q["id"] in wanted]
        if len(items) != len(wanted):
            raise NotFound(f"no held op with id(s) {sorted(wanted - {q['id'] for q in items})}")
        with self.store.transaction():
            self._release_in_transaction(items, by=by)
        return len(items)

    def _next_server_seq(self) -> int:
        n = int(self.store.meta("server_seq", "0") or 0) + 1
        self.store.set_meta("server_seq", str(n))
        return n

    def _answer(self, dev: Mapping[str, Any], payload: dict[str, Any]) -> bytes:
        # what the server holds of the device's sequence, and its epoch: after a restore the
        # laptop resends what the server lost and takes the new pull cursor (docs/audit.md)
        payload = {**payload, "server_time_ms": self.store.now_ms(), "erase": False,
                   "seq_status": lifecycle.seq_status(self.store.conn, dev["device_id"]),
                   "epoch": backup.current_epoch(self.store.conn)}
        return env.seal(payload, type="answer", sender=self.keys.node_id, seq=0,
                        signing_key=self.keys.ed25519, recipient=self.device_x25519(dev))

    def erase_order(self, dev: Mapping[str, Any]) -> bytes:
        payload = {"erase": True, "device": dev["device_id"], "server_time_ms": self.store.now_ms(),
                   "reason": dev.get("revoked_reason") or "revoked"}
        return env.seal(payload, type="answer", sender=self.keys.node_id, seq=0,
                        signing_key=self.keys.ed25519, recipient=self.device_x25519(dev))

    # ---- the server's own ops ----

    def author(self, specs: Iterable[Mapping[str, Any]], *, author: str, occurred_at: str) -> list[Op]:
        """Make server ops (sweep, coordinator), seal them to the server, ledger them, merge them."""
        with self.store.transaction():
            return self.author_in_transaction(specs, author=author, occurred_at=occurred_at)

    def author_in_transaction(self, specs: Iterable[Mapping[str, Any]], *, author: str, occurred_at: str) -> list[Op]:
        last = self.store.hlc_last()
        ops = []
        for spec in specs:
            op_id = spec.get("op_id") or os.urandom(16).hex()
            fields = {k: v for k, v in spec.items() if k != "op_id"}
            op, last = make_op(last=last, wall_ms=self.store.now_ms(), device=self.keys.node_id, author=author,
                               op_id=op_id, occurred_at=occurred_at, **fields)
            check_op(op)
            ops.append(op)
        if not ops:
            return []
        fresh = self.append_server_ops(ops)
        assert last is not None
        self.store.set_meta("hlc_last", last.encode())
        return fresh

    def append_server_ops(self, ops: Iterable[Op]) -> list[Op]:
        """Seal ready-made server ops to the server, ledger them and merge them (in the caller's
        transaction); ops whose id the replica already holds are skipped. Returns those written."""
        fresh = [op for op in ops if not self.store.replica.has_op(op.op_id)]
        if not fresh:
            return []
        n = self._next_server_seq()
        cs = ChangeSet(self.keys.node_id, n, tuple(fresh))
        sealed = env.seal_changeset(cs, signing_key=self.keys.ed25519, recipient=self.keys.x25519.public_key())
        seq = ledger.append(self.store.conn, kind="server", device=self.keys.node_id, device_seq=n, envelope=sealed,
                            received_ms=self.store.now_ms())
        before = self.store.max_op_seq()
        self.store.replica.apply_in_transaction(fresh)
        self.store.note_merged(seq, before)
        return fresh

    def _after_merge(self, cases: set[str]) -> None:
        """Run the deadline sweep for the cases a merge touched (docs/deadlines.md).

        After the merge's commit: a failure here never undoes a merge, and the next sweep
        finds these cases by the op watermark anyway.
        """
        if not cases or self.rules is None:
            return
        from sync_server.sweep import Sweeper

        try:
            Sweeper(self, self.rules).sweep_cases(sorted(cases), self.store.now_ms())
        except Exception as exc:  # noqa: BLE001 - the merge is committed; the device must get its ack
            # the cases stay past the sweep's op watermark, so the next sweep takes them again
            with self.store.transaction():
                self.store.set_meta("sweep_last_error", f"{self.store.now_ms()} after merge: {exc!r}"[:2000])

    # ---- pull ----

    def pull(self, data: bytes, *, carrier: str | None = None) -> bytes:
        """Answer a pull request with the ops of the device's scope past its cursor."""
        size = len(data) if isinstance(data, bytes | bytearray) else None
        try:
            header, _ = env.read_header(data)
        except env.EnvelopeError as exc:
            raise _refuse(self.store, exc, device=None, seq=None, size=size, carrier=carrier) from None
        try:
            if header["type"] != "request":
                raise BadRequest("expected a request envelope")
        except MinqingError as exc:
            raise _refuse(self.store, exc, device=str(header["sender"])[:40], seq=None, size=size,
                          carrier=carrier) from None
        dev, req = self._check_sender(data, header, size=size or 0, carrier=carrier)
        try:
            after = req.get("after", 0)
            limit = req.get("limit", DEFAULT_PULL_LIMIT)
            if not env.is_seq(after) or not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise BadRequest("after and limit must be non-negative integers (after at most 2^63-1)")
            if req.get("device") != dev["device_id"]:
                raise BadRequest("the request names another device than its signer")
        except MinqingError as exc:
            raise _refuse(self.store, exc, device=dev["device_id"], seq=None, size=size, carrier=carrier) from None
        limit = min(limit, MAX_PULL_LIMIT)
        with self.store.transaction():
            after = backup.effective_after(self.store.conn, after, req.get("epoch"))  # across a restore
            moved = self.presented_after(dev["device_id"], after)
            payload = self._collect(dev, after, limit, record=moved)
            if self.rules is not None and self.rules.text:
                # the county's rules travel to a laptop whose copy differs (docs/deadlines.md)
                digest = hashlib.sha256(self.rules.text.encode()).hexdigest()
                if req.get("rules_sha256") != digest:
                    payload["rules"] = self.rules.text
                    payload["rules_sha256"] = digest
            sent = req.get("sent_ms")
            # a clock reading, not any integer: an SQLite INTEGER holds the offset
            sent = sent if env.is_seq(sent) else None
            if self._fresh_request(dev["device_id"], moved, sent):
                offset = self.store.now_ms() - sent if sent is not None else None
                self._touch(dev["device_id"], offset_ms=offset)
        return self._answer(dev, payload)

    def _fresh_request(self, device_id: str, moved: bool, sent: int | None) -> bool:
        """Whether a pull request is news of the device: its cursor is past every one it named
        before, or its clock reading is later than any before. A replayed or late copy of an
        old request is neither: it still gets its answer, but it neither counts as contact
        (which would end "awaiting sync" for a laptop that has not synced) nor sets the
        device's clock offset from an old reading."""
        return (sent is not None and self._raise_mark(f"pull_sent:{device_id}", sent)) or moved

    def _raise_mark(self, key: str, value: int) -> bool:
        """Raise the high-water mark ``key`` in ``server_meta`` to ``value``; True when it rose."""
        if value <= int(self.store.meta(key, "-1") or -1):
            return False
        self.store.set_meta(key, str(value))
        return True

    def scope_cases(self, node: str) -> set[str]:
        sub = sorted(self.store.subtree(node))
        out: set[str] = set()
        for i in range(0, len(sub), 400):
            chunk = sub[i : i + 400]
            marks = ", ".join("?" * len(chunk))
            q = f"SELECT id FROM cases WHERE origin_node IN ({marks}) OR node IN ({marks})"
            out.update(r[0] for r in self.store.conn.execute(q, chunk + chunk))
        return out

    def presented_after(self, device_id: str, after: int) -> bool:
        """Note the cursor a device's request names (inside the caller's transaction). True only
        when it is past every cursor the device named before: then it is where the device is,
        and what the answer sends may be recorded in ``device_cases``. A request at or behind
        one seen before may be stale (a replay, a copy arriving late, an old bundle's request
        file): the device may have moved past its answer's cursor since, without the history
        of a case that entered its scope meanwhile, so its answer must not count as sent."""
        return self._raise_mark(f"pull_after:{device_id}", after)

    def _collect(self, dev: Mapping[str, Any], after: int, limit: int, *, record: bool = True) -> dict[str, Any]:
        from conflict.replica import OP_COLUMNS, row_to_op

        conn = self.store.conn
        device_id = dev["device_id"]
        scope = self.scope_cases(dev["node"])
        had = {r[0] for r in conn.execute(
            "SELECT case_id FROM device_cases WHERE device_id=? AND sent_cursor<=?", (device_id, after))}
        cols = ", ".join(OP_COLUMNS)
        ops: list[Op] = []
        cursor = after
        more = False
        for row in conn.execute(f"SELECT seq, {cols} FROM ops WHERE seq > ? ORDER BY seq", (after,)):
            if len(ops) >= limit:
                more = True
                break
            cursor = row[0]
            op = row_to_op(row[1:])
            if op.case_id in scope and op.device != device_id:
                ops.append(op)
        history: list[Op] = []
        new_cases = sorted(scope - had)
        for case_id in new_cases:
            for row in conn.execute(f"SELECT {cols} FROM ops WHERE case_id=? AND seq<=? ORDER BY seq", (case_id, after)):
                op = row_to_op(row)
                if op.device != device_id:
                    history.append(op)
        if new_cases and record:
            conn.executemany(
                "INSERT INTO device_cases(device_id, case_id, sent_cursor) VALUES (?, ?, ?) "
                "ON CONFLICT(device_id, case_id) DO UPDATE SET sent_cursor=excluded.sent_cursor "
                "WHERE device_cases.sent_cursor > ?",
                [(device_id, c, cursor, after) for c in new_cases],
            )
        return {"ops": [op.to_dict() for op in history + ops], "cursor": cursor, "more": more}

    # ---- rebuild from the ledger ----

    def rebuild_into(self, path: Path, *, progress: Progress | None = None) -> tuple[Replica, dict[str, Any] | None]:
        """Fold a fresh replica at ``path`` from the ledger alone, with the live decisions.

        Returns the replica and, if an entry could not be opened (or its envelope's header
        names another sender or sequence than the entry), which one and why. Entries are
        applied in the ledger's order, a few hundred per transaction.
        """
        fresh = Replica(path, synchronous="OFF")
        lookup = self._case_lookup(fresh.conn)
        total = ledger.head(self.store.conn)[0]
        devices: dict[str, tuple[dict[str, Any], set[str]] | None] = {}
        keys: dict[str, tuple[Ed25519PublicKey | None, list[tuple[int, Ed25519PublicKey]]]] = {}
        entries = ledger.entries(self.store.conn)
        done = 0
        while True:
            batch = list(itertools.islice(entries, REBUILD_BATCH))
            if not batch:
                return fresh, None
            with fresh.transaction():
                for e in batch:
                    failure = self._rebuild_entry(fresh, lookup, devices, keys, e)
                    if failure is not None:
                        return fresh, failure
            done += len(batch)
            if progress is not None:
                progress("rebuild", done, total)

    def _rebuild_key(self, keys: dict[str, Any], sender: str, seq: int | None) -> Ed25519PublicKey | None:
        """``sender_key`` with the keys of each sender read once per rebuild."""
        if sender not in keys:
            current = self.sender_key(sender)
            retired = [(k["until_seq"], Ed25519PublicKey.from_public_bytes(bytes.fromhex(k["ed25519"])))
                       for k in reversed(lifecycle.retired_keys(self.store.conn, sender))]
            keys[sender] = (current, retired)
        current, retired = keys[sender]
        if seq is not None:
            for until, key in retired:  # ascending: the first retired key whose range holds seq
                if seq <= until:
                    return key  # type: ignore[no-any-return]
        return current  # type: ignore[no-any-return]

    def _rebuild_entry(self, fresh: Replica, lookup: Any, devices: dict[str, Any], keys: dict[str, Any],
                       e: ledger.Entry) -> dict[str, Any] | None:
        seq = e.device_seq if e.kind == "device" else None
        try:
            sealed = env.open(e.envelope, recipient_key=self.keys.x25519,
                              sender_key=lambda s: self._rebuild_key(keys, s, seq))
        except MinqingError as exc:
            return {"ledger_seq": e.ledger_seq, "code": exc.code, "message": exc.message}
        header = sealed.header
        if header["sender"] != e.device or (seq is not None and header["seq"] != seq):
            return {"ledger_seq": e.ledger_seq, "code": "ledger.header_mismatch",
                    "message": f"the envelope names {header['sender']} #{header['seq']}, the entry {e.device} #{e.device_seq}"}
        if e.kind == "device":
            if e.device not in devices:
                dev = self.store.device(e.device)
                devices[e.device] = None if dev is None else (
                    lifecycle.with_authors(self.store.conn, dev), self.store.subtree(dev["node"]))
            known = devices[e.device]
            if known is None:
                return None
            try:
                cs, bad = env.changeset_from(sealed)
            except MinqingError as exc:
                return {"ledger_seq": e.ledger_seq, "code": exc.code, "message": exc.message}
            ops = plan_changeset(cs, bad, sealed.payload.get("ops", []), known[0], known[1], lookup).apply
        else:
            ops, _ = partition_ops(sealed.payload.get("ops", []))
        fresh.apply_in_transaction(ops, set_aside_reused=e.kind == "device")  # held live, so left out here too
        return None

    def rebuild_report(self, *, progress: Progress | None = None) -> dict[str, Any]:
        """Rebuild from the ledger in a scratch file and compare with the live state."""
        chain = ledger.verify_chain(self.store.conn, progress=progress)
        with tempfile.TemporaryDirectory(prefix="minqing-rebuild-") as tmp:
            fresh, failure = self.rebuild_into(Path(tmp) / "rebuilt.db", progress=progress)
            try:
                live_snap = self.store.replica.snapshot()
                new_snap = fresh.snapshot()
                differing = [t for t in live_snap if live_snap[t] != new_snap[t]]
                report = {
                    "chain_ok": chain.ok, "chain_entries": chain.entries, "chain_first_bad": chain.first_bad,
                    "chain_reason": chain.reason,
                    "live_digest": self.store.replica.digest(), "rebuilt_digest": fresh.digest(),
                    "tables_differing": differing, "rebuild_failed_at": failure,
                }
                if failure and report["chain_first_bad"] is None:
                    report["chain_first_bad"] = failure["ledger_seq"]
                    report["chain_reason"] = f"{failure['code']}: {failure['message']}"
            finally:
                fresh.close()
        report["equal"] = (report["live_digest"] == report["rebuilt_digest"] and not report["tables_differing"]
                           and failure is None)
        return report


"""The laptop's sync agent: enrollment, push, pull, bundles, erase orders (docs/sync.md).

The network sits behind a small ``Transport`` seam (STYLE.md, after httpx):
``post(path, body, content_type) -> (status, content_type, body)``. ``HttpTransport``
uses requests with time-outs; ``WsgiTransport`` runs the server's Flask app in-process
for tests. Bundles (USB) are files written and read by ``export_bundle`` / ``import_bundle``.

Change sets are packed once and kept (``outgoing``): a retried push resends the same
bytes under the same sequence number, so a cut connection at any byte can neither lose
nor double anything. The push cursor moves only on a verified answer from the pinned
server key; the pull cursor moves in the same transaction that applies the ops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from conflict.hlc import receive
from field_client.errors import ClientError
from field_client.keystore import _raw_public
from field_client.store import FieldClient
from schema import envelope as env
from schema.errors import MinqingError
from schema.ops import ChangeSet, canonical_json
from schema.rules import RulesInvalid
from schema.stamp import parse
from schema.validation import partition_ops

OCTET = "application/octet-stream"
CHUNK_OPS = 100
PULL_LIMIT = 300
APP_VERSION = "0.1.0"
Progress = Callable[[str, int, int], None]


class SyncError(ClientError):
    """Sync could not complete; ``code`` says why (sync.unreachable, sync.timeout, ...)."""

    code = "sync.failed"


class Erased(ClientError):
    """The server ordered this revoked device to erase its data, and it did."""

    code = "sync.erased"


class Transport(Protocol):
    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]: ...


class HttpTransport:
    """requests, with connect/read time-outs; requests' exceptions are translated here only."""

    def __init__(self, base_url: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        import requests

        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        import requests

        try:
            r = self.session.post(self.base + path, data=body, headers={"Content-Type": content_type},
                                  timeout=self.timeout)
        except requests.Timeout as exc:
            raise SyncError(f"服务器响应超时 (the server did not answer in time): {exc}", code="sync.timeout") from exc
        except requests.RequestException as exc:
            raise SyncError(f"连不上服务器 (cannot reach the server {self.base}): {type(exc).__name__}",
                            code="sync.unreachable") from exc
        length = r.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) != len(r.content):
            # the server always says how long its answer is: a reply cut short (in its headers,
            # even) is a broken connection, to be retried like one
            raise SyncError(f"与服务器的连接中断 (the connection to {self.base} broke mid-answer)",
                            code="sync.unreachable")
        return r.status_code, r.headers.get("Content-Type", ""), r.content


class WsgiTransport:
    """The server's Flask app in-process (end-to-end tests without sockets)."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
        r = self.client.post(path, data=body, content_type=content_type)
        return r.status_code, r.headers.get("Content-Type", ""), r.get_data()


@dataclass
class SyncReport:
    pushed_envelopes: int = 0
    pushed_ops: int = 0
    duplicates: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    pulled_ops: int = 0
    cursor: int = 0
    offset_ms: int | None = None


SYNC_TABLES = """
CREATE TABLE IF NOT EXISTS outgoing (seq INTEGER PRIMARY KEY, envelope BLOB NOT NULL, n_ops INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, acked_ms INTEGER);
CREATE TABLE IF NOT EXISTS packed (op_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sync_log (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
  detail TEXT NOT NULL);
"""


def decode_code(code: str) -> dict[str, Any]:
    """An enrollment code's content (docs/sync.md), or SyncError ``enroll.bad_code``."""
    code = code.strip()
    if not code.startswith("MQ1."):
        raise SyncError("注册码格式不对，应以 MQ1. 开头 (an enrollment code starts with MQ1.)", code="enroll.bad_code")
    try:
        doc = json.loads(base64.urlsafe_b64decode(code[4:].encode()))
        assert isinstance(doc, dict) and {"url", "token", "node", "x", "s", "exp"} <= set(doc)
        return doc
    except Exception as exc:  # noqa: BLE001 - any malformed code is the same mistake
        raise SyncError("注册码无法读取，请检查是否抄错 (the code cannot be read)", code="enroll.bad_code") from exc


class SyncAgent:
    """Sync for one unlocked FieldClient."""

    def __init__(self, client: FieldClient, transport: Transport | None = None, *, progress: Progress | None = None,
                 retries: int = 3, backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.conn = client.replica.conn
        self.conn.executescript(SYNC_TABLES)
        self._transport = transport
        self.progress = progress or (lambda stage, done, total: None)
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep

    # ---- server identity (pinned at enrollment) ----

    @property
    def server(self) -> dict[str, Any] | None:
        text = self.client.meta("server")
        return json.loads(text) if text else None

    def transport(self) -> Transport:
        if self._transport is None:
            if not self.server:
                raise SyncError("本机尚未注册到县服务器，请先运行 field-client enroll (not enrolled)", code="sync.not_enrolled")
            self._transport = HttpTransport(self.server["url"])
        return self._transport

    def _server_keys(self) -> tuple[X25519PublicKey, Ed25519PublicKey, str]:
        s = self.server
        if not s:
            raise SyncError("本机尚未注册 (not enrolled)", code="sync.not_enrolled")
        return (X25519PublicKey.from_public_bytes(bytes.fromhex(s["x25519"])),
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(s["ed25519"])), s["node_id"])

    def _log(self, kind: str, detail: Any) -> None:
        self.conn.execute("INSERT INTO sync_log(at_ms, kind, detail) VALUES (?, ?, ?)",
                          (int(self.client.clock() * 1000), kind, json.dumps(detail, ensure_ascii=False)[:4000]))

    # ---- enrollment ----

    def enroll(self, code: str) -> dict[str, Any]:
        doc = decode_code(code)
        if doc["node"] != self.client.node:
            raise SyncError(f"注册码属于 {doc['node']}，本机是 {self.client.node} (the code is for another node)",
                            code="enroll.wrong_node")
        if self.server:
            raise SyncError("本机已经注册过 (this laptop is already enrolled)", code="enroll.already_enrolled")
        keys = self.client.keys
        x_hex = _raw_public(keys.x25519).hex()
        proof = keys.ed25519.sign(f"enroll|{doc['token']}|{keys.device_id}|{x_hex}".encode()).hex()
        body = {"token": doc["token"], "device_id": keys.device_id, "x25519": x_hex,
                "ed25519": _raw_public(keys.ed25519).hex(), "node": self.client.node, "proof": proof,
                "app_version": APP_VERSION, "user": self.client.user}
        if self._transport is None:
            self._transport = HttpTransport(doc["url"])
        sent_ms = int(self.client.clock() * 1000)
        status, _, raw = self._transport.post("/api/v1/enroll", canonical_json(body).encode(), "application/json")
        received_ms = int(self.client.clock() * 1000)
        answer = self._json(status, raw)
        server = answer["server"]
        fp = lambda hex_key: hashlib.sha256(bytes.fromhex(hex_key)).hexdigest()[:16]  # noqa: E731
        if fp(server["x25519"]) != doc["x"] or fp(server["ed25519"]) != doc["s"]:
            raise SyncError("服务器密钥与注册码不符，已拒绝 (the server's keys do not match the code; refused)",
                            code="enroll.key_mismatch")
        info = {"url": doc["url"], "node_id": server["node_id"], "x25519": server["x25519"],
                "ed25519": server["ed25519"], "node": answer["node"], "ancestors": answer.get("ancestors", []),
                "subtree": answer.get("subtree", []), "enrolled_ms": answer.get("server_time_ms")}
        with self.client.replica.transaction():
            self.client._set_meta("server", json.dumps(info, ensure_ascii=False))
            if isinstance(answer.get("server_time_ms"), int):  # a laptop whose clock is off stamps right from the start
                self.client._set_meta("server_offset_ms", str(answer["server_time_ms"] - (sent_ms + received_ms) // 2))
            self._log("enroll", {"node": doc["node"], "server": server["node_id"]})
        return info

    # ---- talking to the server ----

    def _json(self, status: int, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SyncError(f"服务器回复无法读取 (unreadable reply, HTTP {status})", code="sync.bad_reply") from exc
        if status != 200 or not doc.get("ok", False):
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise SyncError(str(err.get("message", f"HTTP {status}")), code=str(err.get("code", "sync.refused")),
                            details=err.get("details"))
        return doc  # type: ignore[no-any-return]

    def _exchange(self, path: str, body: bytes) -> bytes:
        """POST with retries and back-off on network failures; refusals are not retried."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                status, ctype, raw = self.transport().post(path, body, OCTET)
            except SyncError:
                if attempt == self.retries:
                    raise
                self.sleep(delay)
                delay *= 2
                continue
            if status == 200 and ctype.startswith(OCTET):
                return raw
            if status >= 500 and attempt < self.retries:
                self.sleep(delay)
                delay *= 2
                continue
            try:
                self._json(status, raw)
            except SyncError as exc:
                if exc.code == "sync.device_revoked":
                    self._obey_erase(exc)
                raise
            raise SyncError(f"unexpected reply HTTP {status}", code="sync.bad_reply")
        raise AssertionError("unreachable")

    def _open_answer(self, raw: bytes) -> dict[str, Any]:
        _, server_ed, node_id = self._server_keys()
        try:
            sealed = env.open(raw, recipient_key=self.client.keys.x25519,
                              sender_key=lambda s: server_ed if s == node_id else None)
        except env.EnvelopeError as exc:
            raise SyncError(f"服务器回复验证失败 (the answer does not verify: {exc.code})", code="sync.bad_answer") from exc
        if sealed.header["type"] != "answer":
            raise SyncError("服务器回复类型不对 (not an answer)", code="sync.bad_answer")
        if sealed.payload.get("erase") is True:
            self._erase(sealed.payload)
        _check_answer(sealed.payload)
        return sealed.payload

    def _obey_erase(self, exc: SyncError) -> None:
        order = (exc.details or {}).get("erase_order") if isinstance(exc.details, dict) else None
        if order:
            self._open_answer(base64.urlsafe_b64decode(order.encode()))

    def _erase(self, payload: dict[str, Any]) -> None:
        if payload.get("device") != self.client.device_id:
            raise SyncError("清除指令不是给本机的 (the erase order names another device)", code="sync.bad_answer")
        data_dir = self.client.data_dir
        self.client.close()
        for child in data_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        (data_dir / "ERASED.txt").write_text(
            "本机已被县服务器吊销，本地数据已按指令清除。\nThis device was revoked; its local data was erased on the server's order.\n",
            encoding="utf-8")
        raise Erased("本机已被吊销，本地数据已清除 (this device was revoked; local data erased)")

    # ---- packing change sets ----

    def pack(self, chunk_ops: int = CHUNK_OPS) -> int:
        """Seal every op not yet in a change set into envelopes kept in ``outgoing``."""
        server_x, _, _ = self._server_keys()
        from field_client.lifecycle import settle_identity

        settle_identity(self)  # after a re-enrollment: number afresh under the new id (docs/audit.md)
        made = 0
        while True:
            with self.client.replica.transaction():
                rows = self.conn.execute(
                    "SELECT o.op_id FROM outbox o LEFT JOIN packed p ON p.op_id = o.op_id "
                    "WHERE p.op_id IS NULL AND o.acked = 0 ORDER BY o.local_seq LIMIT ?", (chunk_ops,)).fetchall()
                if not rows:
                    return made
                ids = [r[0] for r in rows]
                ops = self._ops_by_id(ids)
                seq = int(self.client.meta("push_seq", "0") or 0) + 1
                cs = ChangeSet(self.client.device_id, seq, tuple(self.client.sealer.open_op(op) for op in ops))
                sealed = env.seal_changeset(cs, signing_key=self.client.keys.ed25519, recipient=server_x)
                self.conn.execute("INSERT INTO outgoing(seq, envelope, n_ops, created_ms) VALUES (?, ?, ?, ?)",
                                  (seq, sealed, len(ops), int(self.client.clock() * 1000)))
                self.conn.executemany("INSERT INTO packed(op_id, seq) VALUES (?, ?)", [(i, seq) for i in ids])
                self.client._set_meta("push_seq", str(seq))
                made += 1

    def _ops_by_id(self, ids: list[str]) -> list[Any]:
        from conflict.replica import OP_COLUMNS, row_to_op

        q = f"SELECT {', '.join(OP_COLUMNS)} FROM ops WHERE op_id IN ({', '.join('?' * len(ids))})"
        by_id = {r[0]: row_to_op(r) for r in self.conn.execute(q, ids)}
        return [by_id[i] for i in ids]

    def unacked(self) -> list[tuple[int, bytes, int]]:
        return list(self.conn.execute("SELECT seq, envelope, n_ops FROM outgoing WHERE acked_ms IS NULL ORDER BY seq"))

    def _ack(self, seq: int) -> None:
        now = int(self.client.clock() * 1000)
        self.conn.execute("UPDATE outgoing SET acked_ms=? WHERE seq=? AND acked_ms IS NULL", (now, seq))
        self.conn.execute("UPDATE outbox SET acked=1 WHERE op_id IN (SELECT op_id FROM packed WHERE seq=?)", (seq,))

    def _left_epoch(self, answer: dict[str, Any]) -> bool:
        """An answer from a server epoch this laptop has left (an old bundle after a restore)."""
        epoch = answer.get("epoch")
        return epoch is not None and epoch in json.loads(self.client.meta("pull_epochs_left", "[]") or "[]")

    def _reconcile(self, answer: dict[str, Any]) -> int:
        """Un-acknowledge change sets the server no longer holds (``seq_status``; a restored server),
        so they are sent again. Inside the caller's transaction; returns how many."""
        status = answer.get("seq_status")
        if not isinstance(status, dict) or self._left_epoch(answer):
            return 0
        through, top = int(status.get("through", 0)), int(status.get("max", 0))
        missing, capped = set(status.get("missing") or []), bool(status.get("capped"))
        lost = [seq for (seq,) in self.conn.execute(
            "SELECT seq FROM outgoing WHERE acked_ms IS NOT NULL AND seq > ? ORDER BY seq", (through,))
            if seq > top or seq in missing or capped]
        if lost:
            marks = ", ".join("?" * len(lost))
            self.conn.execute(f"UPDATE outgoing SET acked_ms=NULL WHERE seq IN ({marks})", lost)
            self.conn.execute(f"UPDATE outbox SET acked=0 WHERE op_id IN (SELECT op_id FROM packed WHERE seq IN ({marks}))",
                              lost)
            self._log("server_lost", {"seqs": lost[:100], "n": len(lost), "through": through})
        return len(lost)

    # ---- push and pull ----

    def push(self, report: SyncReport | None = None) -> SyncReport:
        report = report or SyncReport()
        self.pack()
        for _ in range(3):  # another round resends what an answer showed the server has lost
            pending = self.unacked()
            total = sum(n for _, _, n in pending)
            done = 0
            lost = 0
            for seq, envelope, n_ops in pending:
                self.progress("push", done, total)
                answer = self._open_answer(self._exchange("/api/v1/push", envelope))
                if seq not in answer.get("acks", []):
                    raise SyncError(f"服务器未确认第 {seq} 批 (the server did not acknowledge {seq})", code="sync.bad_answer")
                with self.client.replica.transaction():
                    self._ack(seq)
                    lost += self._reconcile(answer)
                    if answer.get("quarantined"):
                        self._log("quarantined", answer["quarantined"])
                report.pushed_envelopes += 1
                report.pushed_ops += n_ops
                report.duplicates += 1 if answer.get("duplicate") else 0
                report.quarantined.extend(answer.get("quarantined", []))
                done += n_ops
            self.progress("push", done, total)
            if not lost:
                break
        return report

    def _epoch(self) -> dict[str, Any]:
        known = self.client.meta("pull_epoch")
        return {"epoch": known} if known else {}

    def pull(self, report: SyncReport | None = None, *, limit: int = PULL_LIMIT) -> SyncReport:
        report = report or SyncReport()
        _, _, node_id = self._server_keys()
        while True:
            cursor = int(self.client.meta("pull_cursor", "0") or 0)
            sent = int(self.client.clock() * 1000)
            request = env.seal({"device": self.client.device_id, "after": cursor, "limit": limit, "sent_ms": sent, **self._rules_digest(),
                                **self._epoch()},
                               type="request", sender=self.client.device_id, seq=0,
                               signing_key=self.client.keys.ed25519, recipient=self._server_keys()[0])
            answer = self._open_answer(self._exchange("/api/v1/pull", request))
            received = int(self.client.clock() * 1000)
            self._take(answer, sent, received)
            report.pulled_ops += len(answer.get("ops", []))
            report.cursor = int(answer.get("cursor", cursor))
            report.offset_ms = int(self.client.meta("server_offset_ms", "0") or 0)
            self.progress("pull", report.pulled_ops, report.pulled_ops + (limit if answer.get("more") else 0))
            if not answer.get("more"):
                return report

    def _rules_digest(self) -> dict[str, Any]:
        """``rules_sha256`` of the county rules this laptop holds, for a pull request (the
        server sends its file when they differ: docs/sync.md "Pull"); none before the first."""
        sha = self.client.rules_sha256()
        return {"rules_sha256": sha} if sha else {}

    def _take_rules(self, answer: dict[str, Any]) -> None:
        """Keep the county rules an answer carries (inside _take's transaction). Bad rules are
        logged and ignored: the laptop keeps computing its due dates with the ones it had."""
        text = answer.get("rules")
        if text is None:
            return
        sha = answer.get("rules_sha256")
        try:
            if not isinstance(text, str):
                raise RulesInvalid("rules 不是文本 (the rules are not text)")
            if sha is not None and sha != hashlib.sha256(text.encode()).hexdigest():
                raise RulesInvalid("rules_sha256 与内容不符 (the digest does not match the text)")
            self.client.take_rules_in_transaction(text)
        except RulesInvalid as exc:
            self._log("bad_rules_from_server", {"code": exc.code, "message": exc.message,
                                                "rules_sha256": sha})
        else:
            self._log("rules", {"rules_sha256": sha, "county": self.client.rules().county})

    def _take(self, answer: dict[str, Any], sent_ms: int | None, received_ms: int | None) -> None:
        """Apply an answer's ops (sealed for rest), move the cursor, learn the clock offset, keep
        the county's rules; the due dates of the cases touched are worked out again."""
        ops, bad = partition_ops(answer.get("ops", []))
        sealed = [self.client.sealer.seal_op(op) for op in ops]
        with self.client.replica.transaction():
            applied = self.client.replica.apply_in_transaction(sealed)
            self._take_rules(answer)
            if "cursor" in answer and not self._left_epoch(answer):
                self._move_cursor(int(answer["cursor"]), answer.get("epoch"))
            for seq in answer.get("acks", []):
                self._ack(int(seq))
            self._reconcile(answer)
            if bad:
                self._log("bad_ops_from_server", [{"index": i, "code": e.code} for i, e in bad])
            server_ms = answer.get("server_time_ms")
            if isinstance(server_ms, int) and sent_ms is not None and received_ms is not None:
                offset = server_ms - (sent_ms + received_ms) // 2
                self.client._set_meta("server_offset_ms", str(offset))
            last_text = self.client.meta("hlc_last")
            last = parse(last_text) if last_text else None
            wall = self.client.wall_ms()
            for op in ops:
                last, _ = receive(last, parse(op.stamp), wall, self.client.device_id)
            if last is not None:
                self.client._set_meta("hlc_last", last.encode())
            self.client._set_meta("last_sync_ms", str(int(self.client.clock() * 1000)))
            self.client.refresh_due_in_transaction(applied.cases)

    def _move_cursor(self, cursor: int, epoch: Any) -> None:
        """Never backwards (an older answer bundle imported late), except into a new server epoch
        (the server was restored from a backup: it numbers its ops afresh from the restore point)."""
        known = self.client.meta("pull_epoch")
        current = int(self.client.meta("pull_cursor", "0") or 0)
        if epoch is None or epoch == known or (known is None and epoch == "0"):
            cursor = max(current, cursor)
        else:
            if known is not None:
                left = json.loads(self.client.meta("pull_epochs_left", "[]") or "[]")
                self.client._set_meta("pull_epochs_left", json.dumps([*left, known]))
            self._log("server_epoch", {"from": known, "to": epoch, "cursor": cursor, "was": current})
        if epoch is not None:
            self.client._set_meta("pull_epoch", str(epoch))
        self.client._set_meta("pull_cursor", str(cursor))

    def sync(self) -> SyncReport:
        """Push everything pending, then pull everything new (and push again what the pull's
        answer showed the server no longer holds)."""
        report = self.push()
        report = self.pull(report)
        if self.unacked():
            report = self.push(report)
        return report

    def ping(self) -> dict[str, Any] | None:
        """The server's answer to /ping, or None when it cannot be reached."""
        try:
            t = self.transport()
            if isinstance(t, HttpTransport):

                r = t.session.get(t.base + "/api/v1/ping", timeout=(3, 5))
                return r.json() if r.status_code == 200 else None
            if isinstance(t, WsgiTransport):
                return t.client.get("/api/v1/ping").get_json()  # type: ignore[no-any-return]
        except (MinqingError, Exception):  # noqa: BLE001 - "does it answer" is yes or no
            return None
        return None

    # ---- bundles (USB) ----

    def export_bundle(self, folder: str | Path) -> list[Path]:
        """Write every unacknowledged change set, and a pull request, as files in ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.pack()
        written = []
        for seq, envelope, _ in self.unacked():
            path = out / f"mq-{self.client.device_id}-{seq:08d}.mqe"
            _write_atomic(path, envelope)
            written.append(path)
        cursor = int(self.client.meta("pull_cursor", "0") or 0)
        request = env.seal({"device": self.client.device_id, "after": cursor, "limit": 5000,
                            "sent_ms": int(self.client.clock() * 1000), **self._rules_digest(), **self._epoch()},
                           type="request", sender=self.client.device_id, seq=0,
                           signing_key=self.client.keys.ed25519, recipient=self._server_keys()[0])
        req_path = out / f"mq-{self.client.device_id}-request.mqe"
        _write_atomic(req_path, request)
        written.append(req_path)
        with self.client.replica.transaction():
            self._log("export", {"folder": str(out), "files": len(written)})
        return written

    def import_bundle(self, folder: str | Path) -> SyncReport:
        """Take in the server's answer files addressed to this device, in order."""
        report = SyncReport()
        files = sorted(p for p in Path(folder).glob(f"mq-answer-{self.client.device_id}-*.mqe") if p.is_file())
        if not files:
            raise SyncError(f"{folder} 中没有给本机的回复文件 (no answer files for this device)", code="bundle.none")
        for path in files:
            answer = self._open_answer(path.read_bytes())
            self._take(answer, None, None)
            report.pulled_ops += len(answer.get("ops", []))
            report.quarantined.extend(answer.get("quarantined", []))
            report.cursor = int(answer.get("cursor", report.cursor))
        return report

    def status(self) -> dict[str, Any]:
        s = self.server
        last = self.client.meta("last_sync_ms")
        return {
            "enrolled": bool(s),
            "server": s["url"] if s else None,
            "pending_ops": self.client.pending_count(),
            "unacked_envelopes": len(self.unacked()),
            "last_sync_ms": int(last) if last else None,
            "server_offset_ms": int(self.client.meta("server_offset_ms", "0") or 0),
            "pull_cursor": int(self.client.meta("pull_cursor", "0") or 0),
        }


def _check_answer(answer: dict[str, Any]) -> None:
    """An answer whose parts the laptop uses have the shapes docs/sync.md gives them, or
    ``sync.bad_answer``: a malformed answer is refused, whoever signed it, never half taken."""
    status = answer.get("seq_status")
    ok = (isinstance(answer.get("ops", []), list)
          and env.is_seq(answer.get("cursor", 0))
          and isinstance(answer.get("acks", []), list) and all(env.is_seq(a) for a in answer.get("acks", []))
          and isinstance(answer.get("quarantined", []), list)
          and (status is None or (isinstance(status, dict) and env.is_seq(status.get("through", 0))
                                  and env.is_seq(status.get("max", 0))
                                  and isinstance(status.get("missing") or [], list)
                                  and all(env.is_seq(m) for m in status.get("missing") or []))))
    if not ok:
        raise SyncError("服务器回复格式不对 (the answer is malformed)", code="sync.bad_answer")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
    tmp.replace(path)

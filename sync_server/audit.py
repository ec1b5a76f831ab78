"""The IT officer's audit: did a laptop's work arrive, intact, and can it be proved
(docs/audit.md). Three reads over the server's database, shared by ``sync-server audit``
and the auditor's web pages:

``verify``   walks the ledger's hash chain, opens every envelope (signature first, then
             decryption), rebuilds the state from the ledger alone and compares it with
             the live state (``SyncService.rebuild_report``); names the first bad entry
             and why.
``devices``  per device: node, app version, last contact, last sequence received, gaps
             in its sequence, clock offset, refused attempts, quarantined ops, and the
             cases in its scope awaiting its sync (``case_status.awaiting_sync``).
``report``   envelopes received, ops merged, refusals by reason, conflicts opened and
             resolved, quarantine, per device and per day (China time), from a date.

Nothing here writes to the database, except ``scope_verify`` (the laptop's verify request:
its contact time, or its refusal).
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sync_server import ledger, lifecycle
from sync_server.errors import BadRequest
from sync_server.store import ServerStore

CHINA = timezone(timedelta(hours=8))
DAY_MS = 86_400_000
Progress = Callable[[str, int, int], None]


def day_of(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, CHINA).date().isoformat() if ms else "-"


def parse_day(text: str, what: str = "--since") -> int:
    """``2026-11-01`` (also ``2026/11/01``) as the ms of that day's midnight, China time."""
    try:
        d = date.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        raise BadRequest(f"{what} 应为日期，如 2026-11-01 ({what} must be a date like 2026-11-01, got {text!r})",
                         code="audit.bad_date", details={"value": text}) from None
    return int(datetime(d.year, d.month, d.day, tzinfo=CHINA).timestamp() * 1000)


# ---- verify ----


def verify(svc: Any, *, progress: Progress | None = None) -> dict[str, Any]:
    """Chain, signatures and decryption of every entry, and the rebuilt state against the live one."""
    t0 = time.perf_counter()
    report = svc.rebuild_report(progress=progress)
    first_bad = None
    if report["chain_first_bad"] is not None:
        seq = report["chain_first_bad"]
        row = svc.store.conn.execute(
            "SELECT kind, device, device_seq, received_ms FROM ledger WHERE ledger_seq=?", (seq,)).fetchone()
        first_bad = {"ledger_seq": seq, "reason": report["chain_reason"]}
        if row:
            first_bad.update(kind=row[0], device=row[1], device_seq=row[2], received_ms=row[3],
                             received=_when(row[3]))
    warnings = _clock_warnings(svc.store)
    ok = bool(report["chain_ok"] and report["equal"] and first_bad is None)
    return {
        "ok": ok,
        "entries": report["chain_entries"],
        "chain_ok": report["chain_ok"],
        "envelopes_ok": report["rebuild_failed_at"] is None,
        "state_equal": report["equal"],
        "live_digest": report["live_digest"],
        "rebuilt_digest": report["rebuilt_digest"],
        "tables_differing": report["tables_differing"],
        "first_bad": first_bad,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, CHINA).isoformat(timespec="seconds") if ms else "-"


def _clock_warnings(store: ServerStore) -> list[str]:
    """Entries whose receipt time goes backwards (not covered by the chain: a hint, not a failure)."""
    out = []
    rows = store.conn.execute(
        "SELECT ledger_seq, received_ms, LAG(received_ms) OVER (ORDER BY ledger_seq) FROM ledger")
    for seq, ms, prev in rows:
        if prev is not None and ms < prev - 60_000:
            out.append(f"entry {seq}: received_ms goes back {(prev - ms) / 1000:.0f} s "
                       f"(server clock set back, or the row edited)")
            if len(out) >= 20:
                break
    return out


# ---- devices ----


def devices(store: ServerStore) -> list[dict[str, Any]]:
    """Every device as the IT officer needs to see it (see the module docstring)."""
    from sync_server.service import SyncService

    conn = store.conn
    svc = SyncService(store)
    seqs: dict[str, list[int]] = defaultdict(list)
    for device, seq in conn.execute(
            "SELECT device, device_seq FROM ledger WHERE kind='device' ORDER BY device, device_seq"):
        seqs[device].append(seq)
    refused: dict[str, Counter[str]] = defaultdict(Counter)
    for device, code, n in conn.execute("SELECT device, code, COUNT(*) FROM refusals GROUP BY device, code"):
        refused[device or "-"][code] = n
    held: dict[str, Counter[str]] = defaultdict(Counter)
    for device, code, n in conn.execute(
            "SELECT device, code, COUNT(*) FROM quarantine WHERE status='held' GROUP BY device, code"):
        held[device or "-"][code] = n
    awaiting: set[str] = set()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='case_status'").fetchone():
        awaiting = {r[0] for r in conn.execute("SELECT case_id FROM case_status WHERE awaiting_sync=1")}
    names = {n["code"]: n["name"] for n in store.nodes_list()}
    rotations = Counter(e["device_id"] for e in lifecycle.events(conn) if e["kind"] == "rotated")
    scopes: dict[str, set[str]] = {}
    out = []
    for d in store.devices():
        did = d["device_id"]
        got = seqs.get(did, [])
        if awaiting and d["node"] not in scopes:
            scopes[d["node"]] = svc.scope_cases(d["node"])
        waiting = sorted(awaiting & scopes.get(d["node"], set())) if d["status"] == "active" else []
        predecessors = sorted(lifecycle.authors_of(conn, did) - {did})
        out.append({
            "device_id": did,
            "node": d["node"],
            "node_name": names.get(d["node"], ""),
            "level": d["level"],
            "user": d["user"],
            "status": d["status"],
            "app_version": d["app_version"] or "",
            "enrolled_ms": d["enrolled_ms"],
            "last_contact_ms": d["last_contact_ms"],
            "last_contact": _when(d["last_contact_ms"]),
            "last_seq": got[-1] if got else 0,
            "envelopes": len(got),
            "gaps": lifecycle.gaps(got),
            "clock_offset_ms": d["clock_offset_ms"],
            "refused": sum(refused.get(did, Counter()).values()),
            "refused_by_code": dict(sorted(refused.get(did, Counter()).items())),
            "quarantined": sum(held.get(did, Counter()).values()),
            "quarantined_by_code": dict(sorted(held.get(did, Counter()).items())),
            "awaiting_sync": len(waiting),
            "awaiting_sync_cases": waiting[:200],
            "replaced_by": d["replaced_by"],
            "replaces": predecessors,
            "keys_rotated": rotations.get(did, 0),
            "revoked_ms": d["revoked_ms"],
            "erase_sent_ms": d["erase_sent_ms"],
        })
    return out


DEVICE_COLUMNS = ("device_id", "node", "node_name", "user", "status", "app_version", "last_contact", "last_seq",
                  "envelopes", "gaps", "clock_offset_ms", "refused", "quarantined", "awaiting_sync", "replaced_by",
                  "keys_rotated")


def devices_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(DEVICE_COLUMNS)
    for r in rows:
        w.writerow([_cell(r[c]) for c in DEVICE_COLUMNS])
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(f"{a}-{b}" if a != b else str(a) for a, b in value)
    return "" if value is None else value


# ---- report ----

METRIC_KEYS = ("envelopes", "ops_merged", "ops_quarantined", "quarantine_released", "refused",
               "conflicts_opened", "conflicts_resolved")


def report(store: ServerStore, since_ms: int, until_ms: int | None = None) -> dict[str, Any]:
    """Counts from ``since_ms`` (inclusive) to ``until_ms`` (exclusive), per (day, device)."""
    conn = store.conn
    until = until_ms if until_ms is not None else 2**62
    if until <= since_ms:
        raise BadRequest("结束日期须晚于开始日期 (--until must come after --since)", code="audit.bad_date")
    cells: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    refused_codes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    held_codes: Counter[str] = Counter()
    has_ledger_ops = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='ledger_ops'").fetchone() is not None
    q = ("SELECT l.received_ms, l.device, " + ("COALESCE(lo.last_seq - lo.first_seq + 1, 0)" if has_ledger_ops else "NULL")
         + " FROM ledger l " + ("LEFT JOIN ledger_ops lo ON lo.ledger_seq = l.ledger_seq " if has_ledger_ops else "")
         + "WHERE l.kind='device' AND l.received_ms >= ? AND l.received_ms < ?")
    for ms, device, merged in conn.execute(q, (since_ms, until)):
        c = cells[(day_of(ms), device)]
        c["envelopes"] += 1
        c["ops_merged"] += merged or 0
    for ms, device, code in conn.execute(
            "SELECT held_ms, device, code FROM quarantine WHERE held_ms >= ? AND held_ms < ?", (since_ms, until)):
        cells[(day_of(ms), device or "-")]["ops_quarantined"] += 1
        held_codes[code] += 1
    for ms, device in conn.execute(
            "SELECT released_ms, device FROM quarantine WHERE released_ms >= ? AND released_ms < ?", (since_ms, until)):
        cells[(day_of(ms), device or "-")]["quarantine_released"] += 1
    for ms, device, code in conn.execute(
            "SELECT at_ms, device, code FROM refusals WHERE at_ms >= ? AND at_ms < ?", (since_ms, until)):
        key = (day_of(ms), device or "-")
        cells[key]["refused"] += 1
        refused_codes[key][code] += 1
    # conflicts by their stamps: opened by the op whose stamp opened it, resolved by the resolving op
    lo, hi = f"{since_ms:018d}", f"{min(until, 10**18 - 1):018d}"
    for stamp, in conn.execute("SELECT opened_stamp FROM conflicts WHERE opened_stamp >= ? AND opened_stamp < ?",
                               (lo, hi)):
        cells[(day_of(int(stamp[:18])), stamp[-16:])]["conflicts_opened"] += 1
    for stamp, device in conn.execute(
            "SELECT o.stamp, o.device FROM conflicts c JOIN ops o ON o.op_id = c.resolved_by "
            "WHERE c.resolved_by IS NOT NULL AND o.stamp >= ? AND o.stamp < ?", (lo, hi)):
        cells[(day_of(int(stamp[:18])), device)]["conflicts_resolved"] += 1

    nodes = {d["device_id"]: d["node"] for d in store.devices()}
    rows = []
    for (day, device), c in sorted(cells.items()):
        codes = refused_codes.get((day, device), Counter())
        rows.append({"day": day, "device": device, "node": nodes.get(device, ""),
                     **{k: c.get(k, 0) for k in METRIC_KEYS}, "refused_by_code": dict(sorted(codes.items()))})
    by_day: dict[str, Counter[str]] = defaultdict(Counter)
    by_device: dict[str, Counter[str]] = defaultdict(Counter)
    device_codes: dict[str, Counter[str]] = defaultdict(Counter)
    refused_total: Counter[str] = Counter()
    for r in rows:
        for k in METRIC_KEYS:
            by_day[r["day"]][k] += r[k]
            by_device[r["device"]][k] += r[k]
        device_codes[r["device"]].update(r["refused_by_code"])
        refused_total.update(r["refused_by_code"])
    totals = {k: sum(r[k] for r in rows) for k in METRIC_KEYS}
    return {
        "ok": True,
        "since": day_of(since_ms),
        "until": day_of(until_ms - 1) if until_ms is not None else None,
        "totals": totals,
        "refused_by_code": dict(sorted(refused_total.items())),
        "quarantined_by_code": dict(sorted(held_codes.items())),
        "by_day": [{"day": d, **{k: c.get(k, 0) for k in METRIC_KEYS}} for d, c in sorted(by_day.items())],
        "by_device": [{"device": d, "node": nodes.get(d, ""), **{k: c.get(k, 0) for k in METRIC_KEYS},
                       "refused_by_code": dict(sorted(device_codes[d].items()))} for d, c in sorted(by_device.items())],
        "rows": rows,
        "ops_merged_known": has_ledger_ops,
    }


REPORT_COLUMNS = ("day", "device", "node", *METRIC_KEYS, "refused_by_code")


def report_csv(rep: dict[str, Any]) -> str:
    """One row per (day, device), then a total row; refusal codes as ``code=n;code=n``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    for r in rep["rows"]:
        w.writerow([*(r[k] for k in REPORT_COLUMNS[:-1]), ";".join(f"{k}={v}" for k, v in r["refused_by_code"].items())])
    w.writerow(["total", "", "", *(rep["totals"][k] for k in METRIC_KEYS),
                ";".join(f"{k}={v}" for k, v in rep["refused_by_code"].items())])
    return buf.getvalue()


def chain_head(store: ServerStore) -> dict[str, Any]:
    seq, h = ledger.head(store.conn)
    return {"ledger_seq": seq, "hash": h}


# ---- the laptop's verify (POST /api/v1/verify) ----

VERIFY_BUCKETS = (3_600_000, 86_400_000)  # an hour or a day of stamp time per digest
MAX_VERIFY_PAIRS = 50_000  # (op id, stamp) pairs in one answer at most
MAX_VERIFY_BUCKETS = 100_000


def scope_verify(svc: Any, data: bytes, *, carrier: str | None = None) -> bytes:
    """Answer a device's verify request: the scope's digest and the pairs of the buckets that
    differ from the device's (op ids and stamps only; docs/sync.md "Verify")."""
    from conflict.digest import bucket_digests, diff_buckets, op_digest
    from schema import envelope as env
    from schema.errors import MinqingError
    from sync_server.service import _refuse

    store = svc.store
    size = len(data) if isinstance(data, bytes | bytearray) else None
    try:
        header, _ = env.read_header(data)
        if header["type"] != "request":
            raise BadRequest("expected a request envelope")
    except MinqingError as exc:
        raise _refuse(store, exc, device=None, seq=None, size=size, carrier=carrier) from None
    dev, req = svc._check_sender(data, header, size=size or 0, carrier=carrier)
    try:
        v = req.get("verify")
        if req.get("device") != dev["device_id"] or not isinstance(v, dict):
            raise BadRequest("a verify request names its signer and carries 'verify'")
        bucket_ms, buckets = v.get("bucket_ms"), v.get("buckets")
        if bucket_ms not in VERIFY_BUCKETS or not isinstance(buckets, dict) or len(buckets) > MAX_VERIFY_BUCKETS:
            raise BadRequest(f"bucket_ms must be one of {VERIFY_BUCKETS} and buckets a map of at most "
                             f"{MAX_VERIFY_BUCKETS}")
        theirs = {int(k): str(d) for k, d in buckets.items()}
    except (ValueError, TypeError):
        raise _refuse(store, BadRequest("buckets must map bucket start (ms) to a digest"), device=dev["device_id"],
                      seq=0, size=size, carrier=carrier) from None
    except MinqingError as exc:
        raise _refuse(store, exc, device=dev["device_id"], seq=0, size=size, carrier=carrier) from None
    scope = svc.scope_cases(dev["node"])
    pairs = [(op_id, stamp) for op_id, stamp, case_id in store.conn.execute("SELECT op_id, stamp, case_id FROM ops")
             if case_id in scope]
    differing = diff_buckets(bucket_digests(pairs, bucket_ms), theirs)
    wanted = set(differing)
    listed = [[op_id, stamp] for op_id, stamp in pairs if int(stamp[:18]) // bucket_ms * bucket_ms in wanted]
    authors = lifecycle.authors_of(store.conn, dev["device_id"])
    held = [{"op_id": q["op_id"], "code": q["code"]} for q in store.quarantined("held") if q["device"] in authors]
    with store.transaction():
        svc._touch(dev["device_id"])
    return svc._answer(dev, {"verify": {
        "digest": op_digest(pairs), "ops": len(pairs), "bucket_ms": bucket_ms, "buckets_differing": differing,
        "pairs": listed[:MAX_VERIFY_PAIRS], "truncated": len(listed) > MAX_VERIFY_PAIRS, "held": held}})

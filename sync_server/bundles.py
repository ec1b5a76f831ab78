"""Bundles: envelopes that travel as files on a USB stick (docs/sync.md "Bundles").

``import_folder`` takes every ``mq-*.mqe`` a carrier brought (change sets through the
same path as ``/push``; a device's pull request records where its answer must start)
and never stops at a bad file: each is reported with its code. ``export_for`` writes
the answer files for one device: acknowledgements of everything of its in the ledger,
and the ops of its scope past the cursor its last request named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schema import envelope as env
from schema.errors import MinqingError
from sync_server.errors import NotFound
from sync_server.service import SyncService

MAX_FILE = env.MAX_ENVELOPE


@dataclass
class ImportReport:
    files: int = 0
    merged: int = 0
    duplicates: int = 0
    requests: int = 0
    applied_ops: int = 0
    quarantined: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)


def import_folder(svc: SyncService, folder: str | Path, *, carrier: str = "bundle") -> ImportReport:
    report = ImportReport()
    files = sorted(p for p in Path(folder).glob("mq-*.mqe")
                   if not p.name.startswith("mq-answer-") and p.is_file())  # a folder so named is no bundle
    for path in files:
        report.files += 1
        name = shown(path.name)
        try:
            if path.stat().st_size > MAX_FILE:
                raise env.EnvelopeError(f"{name} is larger than an envelope may be", code="envelope.too_large")
            data = path.read_bytes()
            header, _ = env.read_header(data)
            if header["type"] == "request":
                _take_request(svc, data)
                report.requests += 1
                continue
            result = svc.receive(data, carrier=f"{carrier}:{name}")
            if result.duplicate:
                report.duplicates += 1
            else:
                report.merged += 1
            report.applied_ops += result.applied
            report.quarantined += len(result.quarantined)
        except MinqingError as exc:
            if not getattr(exc, "logged", False):
                with svc.store.transaction():
                    svc.store.log_refusal(exc.code, exc.message, size=None, carrier=f"{carrier}:{name}")
            report.refused.append({"file": name, "code": exc.code, "message": exc.message})
    return report


def shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a stick written elsewhere) as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _take_request(svc: SyncService, data: bytes) -> None:
    header, _ = env.read_header(data)
    dev, payload = svc._check_sender(data, header, size=len(data), carrier="bundle")
    after = payload.get("after")
    if payload.get("device") != dev["device_id"]:
        raise env.EnvelopeError("the request names another device than its signer", code="envelope.bad_payload")
    if not env.is_seq(after):
        raise env.EnvelopeError("a request needs a non-negative 'after'", code="envelope.bad_payload")
    from sync_server.backup import effective_after

    with svc.store.transaction():
        after = effective_after(svc.store.conn, after, payload.get("epoch"))  # a cursor from before a restore
        svc.store.conn.execute("UPDATE devices SET bundle_after=? WHERE device_id=?", (after, dev["device_id"]))
        svc._touch(dev["device_id"])


def export_for(svc: SyncService, device_id: str, folder: str | Path, *, limit: int = 5000) -> list[Path]:
    dev = svc.store.device(device_id)
    if dev is None:
        raise NotFound(f"没有这台设备 {device_id} (no such device)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    conn = svc.store.conn
    acks = [r[0] for r in conn.execute(
        "SELECT device_seq FROM ledger WHERE kind='device' AND device=? ORDER BY device_seq", (device_id,))]
    held = [{"op_id": q["op_id"], "code": q["code"], "message": q["message"]}
            for q in svc.store.quarantined("held") if q["device"] == device_id]
    if dev["status"] == "revoked":
        path = out / f"mq-answer-{device_id}-erase.mqe"
        path.write_bytes(svc.erase_order(dev))
        return [path]
    after = int(dev["bundle_after"] or 0)
    written = []
    n = int(svc.store.meta(f"bundle_n:{device_id}", "0") or 0)
    record: bool | None = None
    while True:
        with svc.store.transaction():
            if record is None:  # where the device's request file said it was: a stale one records nothing
                record = svc.presented_after(device_id, after)
            payload = svc._collect(dev, after, limit, record=record)
            n += 1
            svc.store.set_meta(f"bundle_n:{device_id}", str(n))
        payload.update(acks=acks, quarantined=held)
        path = out / f"mq-answer-{device_id}-{n:06d}.mqe"
        data = svc._answer(dev, payload)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(path)
        after = payload["cursor"]
        if not payload["more"]:
            return written

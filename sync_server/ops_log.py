"""Operating signals of the county server: JSON-line logs with a request id, ``/healthz``,
``/metrics`` (Prometheus text format), and the lock that marks a data folder as served.

* **Logs.** Every record of the ``minqing`` loggers is one JSON object per line on stderr
  (``ts``, ``level``, ``logger``, ``msg``, and ``request_id`` when inside a request). Each
  HTTP request ends with one ``"msg": "request"`` line: method, path, status, ms, bytes
  in and out, the client address. The request id comes from the ``X-Request-Id`` header
  (1-64 of ``[A-Za-z0-9._:-]``) or is made here (32 hex), and is echoed in the answer's
  ``X-Request-Id``; a refusal's log line carries its error code.
* **Health.** ``GET /healthz`` opens the database and reads the ledger's head: 200
  ``{"ok": true, ...}``, or 503 with the one error body (``server.unhealthy``).
* **Metrics.** ``GET /metrics``: counts read from the database at scrape time (so they
  survive restarts and agree with ``sync-server audit report``) plus this process's HTTP
  counters. Names are listed in ``METRICS`` and in docs/audit.md.
* **Serving lock.** ``serving_lock(data_dir)`` holds an exclusive ``flock`` on
  ``serve.lock`` for as long as ``sync-server serve`` runs; ``sync-server restore``
  refuses a folder whose lock is held.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from schema.errors import MinqingError

LOGGER = "minqing"
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
LOCK_FILE = "serve.lock"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, help): every metric /metrics exposes (docs/audit.md lists the same)
METRICS: dict[str, tuple[str, str]] = {
    "minqing_up": ("gauge", "1 when the database answered this scrape"),
    "minqing_ledger_entries": ("gauge", "ledger entries by kind (device change sets; server/release entries)"),
    "minqing_envelopes_received_total": ("counter", "device change-set envelopes accepted into the ledger"),
    "minqing_ops": ("gauge", "ops in the server's op log"),
    "minqing_refusals_total": ("counter", "refused attempts (envelopes, requests, enrollments) by code"),
    "minqing_quarantine_held": ("gauge", "ops held in quarantine now, by code"),
    "minqing_quarantine_released_total": ("counter", "quarantined ops released so far"),
    "minqing_devices": ("gauge", "enrolled devices by status"),
    "minqing_cases_awaiting_sync": ("gauge", "cases whose deadline waits for a device's sync (case_status)"),
    "minqing_conflicts_open": ("gauge", "open conflicts"),
    "minqing_sweep_last_timestamp_seconds": ("gauge", "when the last deadline sweep ran (server_meta sweep_last_ms)"),
    "minqing_sweep_duration_seconds": ("gauge", "how long the last deadline sweep took (server_meta sweep_duration_ms)"),
    "minqing_http_requests_total": ("counter", "HTTP requests answered by this process, by route and status"),
    "minqing_http_request_duration_seconds": ("summary", "time spent answering requests, by route (_sum, _count)"),
    "minqing_scrape_duration_seconds": ("gauge", "time this scrape took to read the database"),
}


# ---- JSON lines ----


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the request id rides along when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or _current_request_id()
        if rid:
            doc["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            # the type and message only: a traceback stays out of the JSON line a person may see
            exc = record.exc_info[1]
            doc["error"] = f"{type(exc).__name__}: {exc}"
        return json.dumps(doc, ensure_ascii=False, default=str)


def _current_request_id() -> str | None:
    try:
        return g.get("request_id")  # type: ignore[no-any-return]
    except RuntimeError:  # outside a request or app context
        return None


_configured = threading.Lock()


def configure_logging(stream: Any = None, level: int = logging.INFO) -> logging.Handler:
    """Send the ``minqing`` loggers to ``stream`` (stderr) as JSON lines; idempotent."""
    logger = logging.getLogger(LOGGER)
    with _configured:
        for h in logger.handlers:
            if getattr(h, "_minqing_json", False):
                return h
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._minqing_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return handler


# ---- request ids and HTTP counters ----


class HttpCounters:
    """This process's requests by (route, status) and time by route (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.seconds: dict[str, tuple[float, int]] = {}

    def add(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (route, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            total, n = self.seconds.get(route, (0.0, 0))
            self.seconds[route] = (total + seconds, n + 1)


def _before() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
    g.request_t0 = time.perf_counter()


def _after(resp: Response) -> Response:
    rid = g.get("request_id")
    if rid is None:
        return resp
    resp.headers[REQUEST_ID_HEADER] = rid
    seconds = time.perf_counter() - g.get("request_t0", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    counters: HttpCounters = current_app.extensions["minqing_http"]
    counters.add(route, resp.status_code, seconds)
    fields = {
        "method": request.method, "path": request.path, "route": route, "status": resp.status_code,
        "ms": round(seconds * 1000, 1), "bytes_in": request.content_length or 0,
        "bytes_out": resp.calculate_content_length() or 0, "remote": request.remote_addr,
    }
    if resp.status_code >= 400 and resp.is_json and not resp.is_streamed:
        body = resp.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            fields["code"] = body["error"].get("code")
    logging.getLogger(LOGGER + ".http").info("request", extra={"fields": fields, "request_id": rid})
    return resp


# ---- /healthz and /metrics ----

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Is the server healthy: its database opens and answers."""
    from sync_server.store import ServerStore

    t0 = time.perf_counter()
    try:
        store = ServerStore(current_app.config["DATA_DIR"])
        try:
            head = store.conn.execute("SELECT COALESCE(MAX(ledger_seq), 0) FROM ledger").fetchone()[0]
            store.conn.execute("SELECT 1 FROM ops LIMIT 1").fetchall()
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one body
        logging.getLogger(LOGGER + ".health").error("unhealthy", exc_info=exc)
        code = exc.code if isinstance(exc, MinqingError) else "server.unhealthy"
        body = {"ok": False, "error": {"code": "server.unhealthy",
                                       "message": "数据库无法打开或读取 (the database cannot be opened or read)",
                                       "details": {"cause": code}}}
        resp = jsonify(body)
        resp.status_code = 503
        return resp
    return jsonify({"ok": True, "database": "ok", "ledger_head": head,
                    "ms": round((time.perf_counter() - t0) * 1000, 1)})


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _table_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def collect(conn: Any) -> list[tuple[str, dict[str, str], float]]:
    """(metric, labels, value) read from the server's database (cheap: indexes and small tables)."""
    out: list[tuple[str, dict[str, str], float]] = [("minqing_up", {}, 1)]
    head = conn.execute("SELECT COALESCE(MAX(ledger_seq), 0) FROM ledger").fetchone()[0]
    device_entries = conn.execute("SELECT COUNT(*) FROM ledger WHERE kind='device'").fetchone()[0]
    out.append(("minqing_ledger_entries", {"kind": "device"}, device_entries))
    out.append(("minqing_ledger_entries", {"kind": "server"}, head - device_entries))
    out.append(("minqing_envelopes_received_total", {}, device_entries))
    out.append(("minqing_ops", {}, conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0]))
    for code, n in conn.execute("SELECT code, COUNT(*) FROM refusals GROUP BY code ORDER BY code"):
        out.append(("minqing_refusals_total", {"code": code}, n))
    held = list(conn.execute("SELECT code, COUNT(*) FROM quarantine WHERE status='held' GROUP BY code ORDER BY code"))
    if not held:
        out.append(("minqing_quarantine_held", {"code": "all"}, 0))
    for code, n in held:
        out.append(("minqing_quarantine_held", {"code": code}, n))
    released = conn.execute("SELECT COUNT(*) FROM quarantine WHERE status='released'").fetchone()[0]
    out.append(("minqing_quarantine_released_total", {}, released))
    for status, n in conn.execute("SELECT status, COUNT(*) FROM devices GROUP BY status ORDER BY status"):
        out.append(("minqing_devices", {"status": status}, n))
    awaiting = 0
    if _table_exists(conn, "case_status"):
        awaiting = conn.execute("SELECT COUNT(*) FROM case_status WHERE awaiting_sync=1").fetchone()[0]
    out.append(("minqing_cases_awaiting_sync", {}, awaiting))
    out.append(("minqing_conflicts_open", {},
                conn.execute("SELECT COUNT(*) FROM conflicts WHERE status='open'").fetchone()[0]))
    meta = dict(conn.execute("SELECT key, value FROM server_meta WHERE key IN ('sweep_last_ms', 'sweep_duration_ms')"))
    for key, metric, scale in (("sweep_last_ms", "minqing_sweep_last_timestamp_seconds", 1000),
                               ("sweep_duration_ms", "minqing_sweep_duration_seconds", 1000)):
        try:
            if key in meta:
                out.append((metric, {}, float(meta[key]) / scale))
        except (TypeError, ValueError):
            pass
    return out


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    """Prometheus text exposition format 0.0.4, HELP and TYPE once per metric."""
    lines: list[str] = []
    seen: set[str] = set()
    for name, labels, value in samples:
        family = name if name in METRICS else name.removesuffix("_sum").removesuffix("_count")
        if family not in seen:
            seen.add(family)
            kind, help_text = METRICS[family]
            lines.append(f"# HELP {family} {help_text}")
            lines.append(f"# TYPE {family} {kind}")
        text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
        number = repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
        lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format: the server's counts and this process's HTTP counters."""
    from sync_server.store import ServerStore

    t0 = time.perf_counter()
    try:
        store = ServerStore(current_app.config["DATA_DIR"])
        try:
            samples = collect(store.conn)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - a scrape that cannot read says so, with up 0
        logging.getLogger(LOGGER + ".metrics").error("metrics unavailable", exc_info=exc)
        samples = [("minqing_up", {}, 0)]
    counters: HttpCounters = current_app.extensions["minqing_http"]
    with counters.lock:
        for (route, status), n in sorted(counters.requests.items()):
            samples.append(("minqing_http_requests_total", {"route": route, "status": status}, n))
        for route, (total, n) in sorted(counters.seconds.items()):
            samples.append(("minqing_http_request_duration_seconds_sum", {"route": route}, total))
            samples.append(("minqing_http_request_duration_seconds_count", {"route": route}, n))
    samples.append(("minqing_scrape_duration_seconds", {}, time.perf_counter() - t0))
    return Response(render(samples), mimetype="text/plain", content_type=CONTENT_TYPE)


def init_app(app: Flask) -> None:
    """Request ids, the request log line, /healthz and /metrics for ``app``."""
    app.extensions["minqing_http"] = HttpCounters()
    app.before_request(_before)
    app.after_request(_after)
    app.register_blueprint(bp)
    if app.config.get("LOG_JSON", True):
        configure_logging()


# ---- the serving lock ----


class AlreadyServing(MinqingError):
    """Another ``sync-server serve`` holds this data folder."""

    code = "server.already_serving"


def lock_held(data_dir: str | Path) -> int | None:
    """The pid of the process serving ``data_dir``, or None when no one holds its lock."""
    import fcntl

    path = Path(data_dir) / LOCK_FILE
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


_held: list[Any] = []


def hold_serving_lock(data_dir: str | Path) -> None:
    """Take ``serve.lock`` for the rest of this process (``sync-server serve``)."""
    lock = serving_lock(data_dir)
    lock.__enter__()
    _held.append(lock)


@contextmanager
def serving_lock(data_dir: str | Path) -> Iterator[None]:
    """Hold ``serve.lock`` while serving; a second server on the same folder is refused."""
    import fcntl

    path = Path(data_dir) / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held open for the life of the server
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            raise AlreadyServing(
                f"另一个 sync-server serve 正在使用 {data_dir}（进程 {fh.read().strip() or '?'}）"
                f" (another server is serving this data folder)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()

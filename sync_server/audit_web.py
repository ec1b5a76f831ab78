"""The auditor's pages on the county server's web (blueprint ``itaudit`` under ``/web/audit``).

::

    GET  /web/audit/                          -> devices
    GET  /web/audit/devices                   per device: gaps, contact, refusals, quarantine, awaiting sync
    GET  /web/audit/report?since=&until=      per day and device: received, merged, refused, conflicts, quarantine
    GET  /web/audit/verify[?run=1]            the ledger check: chain, signatures, rebuild vs live
    GET  /web/audit/export/<what>.<csv|xlsx>  each of the three, as the page shows it

The same three views as ``sync-server audit`` (``sync_server.audit`` computes them), in
Chinese by default and English, for the **auditor** (IT) and the administrator. Nothing
here has a login of its own: the coordinator web (``sync_server.web``) loads the session,
checks CSRF on forms and sets the security headers for these pages as for its own
(``views.before``/``views.after``), its error page answers for them, and every export and
every verify run is written to its access log. Without the coordinator web the pages
answer 404. Pages only read; ``verify`` opens no write transaction beyond the access log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

bp = Blueprint("itaudit", __name__, url_prefix="/web/audit", template_folder="templates")
ROLES = frozenset({"auditor", "admin"})
CHINA_DAY_MS = 86_400_000


def t(en: str, zh: str, **kw: Any) -> str:
    """The page's language: Chinese by default (the coordinator web's language cookie)."""
    from sync_server.web.i18n import lang

    text = en if lang() == "en" else zh
    return text.format(**kw) if kw else text


def _views() -> Any:
    from sync_server.web import views

    return views


@bp.before_request
def before() -> Response | None:
    if "minqing_coord_stores" not in current_app.extensions:  # no coordinator web: no pages
        abort(404)
    return _views().before()  # type: ignore[no-any-return]


@bp.after_request
def after(resp: Response) -> Response:
    if "minqing_coord_stores" not in current_app.extensions:
        return resp
    return _views().after(resp)  # type: ignore[no-any-return]


@bp.context_processor
def context() -> dict[str, Any]:
    views = _views()
    s = g.get("session")
    nxt = request.full_path if request.method == "GET" else url_for("itaudit.devices")
    return {
        "user": s.user if s else None,
        "role_label": views.role_label(s.user.role) if s else "",
        "lang_links": {c: url_for("coord.set_lang", code=c, next=views.safe_next(nxt)) for c in ("zh", "en")},
        "open_conflicts": None,
        "t": t,
        "audit_tabs": [("itaudit.devices", t("Devices", "设备")), ("itaudit.report", t("Report", "报表")),
                       ("itaudit.verify", t("Ledger check", "账本校验"))],
    }


def auditor(view: Callable[..., Any]) -> Callable[..., Any]:
    """The page needs a login with the auditor's (or the administrator's) role."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        views = _views()
        s = g.get("session")
        if s is None:
            return redirect(url_for("coord.login", next=request.full_path))
        if s.user.role not in ROLES:
            raise views.Forbidden(t("Your account may not open this page.", "您的账号不能打开这个页面。"))
        return view(*args, **kwargs)

    return wrapper


def _store() -> Any:
    return _views().store()


# ---- devices ----


def device_rows() -> list[dict[str, Any]]:
    from sync_server.audit import devices

    rows = devices(_store())
    for d in rows:
        d["gaps_text"] = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in d["gaps"])
        d["offset_text"] = f"{d['clock_offset_ms'] / 1000:+.1f} s" if d["clock_offset_ms"] is not None else ""
    return rows


STATUS = {"active": ("active", "在用"), "revoked": ("revoked", "已吊销"), "replaced": ("replaced", "已替换")}


def status_label(status: str) -> str:
    en, zh = STATUS.get(status, (status, status))
    return t(en, zh)


def device_table(rows: list[dict[str, Any]]) -> Any:
    from sync_server.web.export import Table
    from sync_server.web.present import fmt_ms

    headers = [t("Device", "设备"), t("Unit", "单位"), t("Unit code", "单位代码"), t("User", "使用人"),
               t("Status", "状态"), t("App version", "版本"), t("Last contact", "最后联系"),
               t("Last batch received", "最后收到批次"), t("Batches received", "已收批数"), t("Gaps", "缺号"),
               t("Clock offset", "时钟差"), t("Refused", "拒收"), t("Quarantined", "隔离"),
               t("Cases awaiting its sync", "待其同步的案件"), t("Replaced by", "被替换为"), t("Replaces", "替换了")]
    return Table(t("Devices", "设备"), headers, [
        [d["device_id"], d["node_name"], d["node"], d["user"] or "", status_label(d["status"]), d["app_version"],
         fmt_ms(d["last_contact_ms"]), d["last_seq"], d["envelopes"], d["gaps_text"], d["offset_text"], d["refused"],
         d["quarantined"], d["awaiting_sync"], d["replaced_by"] or "", " ".join(d["replaces"])] for d in rows])


@bp.route("/")
@auditor
def home() -> Response:
    return redirect(url_for("itaudit.devices"))


@bp.route("/devices")
@auditor
def devices() -> str:
    rows = device_rows()
    return render_template("audit/devices.html", rows=rows, status_label=status_label,
                           gaps=sum(1 for d in rows if d["gaps"]))


# ---- report ----


def _day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        from sync_server.errors import BadRequest

        raise BadRequest(t("A date is written YYYY-MM-DD, e.g. 2026-11-01.", "日期应写成 YYYY-MM-DD，如 2026-11-01。"),
                         code="web.bad_date") from None


def report_data() -> tuple[dict[str, Any], str, str]:
    from sync_server.audit import parse_day, report

    st = _store()
    today = date.fromtimestamp(st.now_ms() / 1000 + 8 * 3600)  # China time
    since = _day(request.args.get("since"), today - timedelta(days=30))
    until = _day(request.args.get("until"), today)
    if until < since:
        from sync_server.errors import BadRequest

        raise BadRequest(t("The end date comes before the start date.", "结束日期早于开始日期。"), code="web.bad_date")
    rep = report(st, parse_day(since.isoformat()), parse_day(until.isoformat()) + CHINA_DAY_MS)
    return rep, since.isoformat(), until.isoformat()


METRICS = [("envelopes", "Batches received", "收到批次"), ("ops_merged", "Ops merged", "合并操作"),
           ("ops_quarantined", "Ops quarantined", "隔离操作"), ("quarantine_released", "Released", "放行"),
           ("refused", "Refused", "拒收"), ("conflicts_opened", "Conflicts opened", "新冲突"),
           ("conflicts_resolved", "Conflicts resolved", "已解决冲突")]


def metric_labels() -> list[tuple[str, str]]:
    return [(k, t(en, zh)) for k, en, zh in METRICS]


def report_tables(rep: dict[str, Any]) -> list[Any]:
    from sync_server.web.export import Table

    labels = [label for _, label in metric_labels()]
    keys = [k for k, _ in metric_labels()]
    codes = lambda c: "; ".join(f"{k} {v}" for k, v in c.items())  # noqa: E731
    return [
        Table(t("Per day", "按日"), [t("Day", "日期"), *labels], [[r["day"], *(r[k] for k in keys)] for r in rep["by_day"]]),
        Table(t("Per device", "按设备"), [t("Device", "设备"), t("Unit code", "单位代码"), *labels, t("Refused by reason", "拒收原因")],
              [[r["device"], r["node"], *(r[k] for k in keys), codes(r["refused_by_code"])] for r in rep["by_device"]]),
        Table(t("Per day and device", "按日按设备"), [t("Day", "日期"), t("Device", "设备"), *labels,
                                                    t("Refused by reason", "拒收原因")],
              [[r["day"], r["device"], *(r[k] for k in keys), codes(r["refused_by_code"])] for r in rep["rows"]]),
    ]


@bp.route("/report")
@auditor
def report() -> str:
    rep, since, until = report_data()
    return render_template("audit/report.html", rep=rep, since=since, until=until, metrics=metric_labels())


# ---- verify ----


def verify_rows(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    bad = result.get("first_bad") or {}
    return [
        (t("Hash chain", "哈希链"), result["chain_ok"], t("every entry links to the one before", "每条都与前一条相连")),
        (t("Signatures and decryption", "签名与解密"), result["envelopes_ok"],
         t("every envelope verifies and opens", "每个信封都验签通过并能解密")),
        (t("Rebuilt from the ledger = live state", "由账本重建 = 实时状态"), result["state_equal"],
         t("op digest and every row", "操作摘要和每一行")),
    ] + ([(t("First bad entry", "第一处问题"), False,
           f"#{bad.get('ledger_seq')} {bad.get('device', '')} {bad.get('device_seq', '')}: {bad.get('reason', '')}")]
         if bad else [])


@bp.route("/verify")
@auditor
def verify() -> str:
    result = None
    if request.args.get("run") == "1":
        result = run_verify()
    return render_template("audit/verify.html", result=result, rows=verify_rows(result) if result else [])


def run_verify() -> dict[str, Any]:
    from sync_server.audit import verify as audit_verify
    from sync_server.service import SyncService

    st = _store()
    t0 = time.perf_counter()
    result = audit_verify(SyncService(st))
    with st.transaction():
        _views().log("audit_verify", what="ledger", detail={"ok": result["ok"], "entries": result["entries"],
                                                             "seconds": round(time.perf_counter() - t0, 2)})
    return result


# ---- exports ----


@bp.route("/export/<what>.<fmt>")
@auditor
def export(what: str, fmt: str) -> Response:
    from sync_server.web.export import Table, render

    if fmt not in ("csv", "xlsx"):
        abort(404)
    stamp = time.strftime("%Y%m%d")
    if what == "devices":
        tables = [device_table(device_rows())]
        detail: dict[str, Any] = {"rows": len(tables[0].rows)}
    elif what == "report":
        rep, since, until = report_data()
        tables = report_tables(rep)
        detail = {"since": since, "until": until}
        stamp = f"{since}_{until}"
    elif what == "verify":
        result = run_verify()
        tables = [Table(t("Ledger check", "账本校验"), [t("Check", "检查"), t("Result", "结果"), t("Detail", "说明")],
                        [[name, t("pass", "通过") if ok else t("FAIL", "未通过"), text]
                         for name, ok, text in verify_rows(result)]
                        + [[t("Entries", "条目"), result["entries"], ""],
                           [t("Live digest", "实时摘要"), result["live_digest"], ""],
                           [t("Rebuilt digest", "重建摘要"), result["rebuilt_digest"], ""]])]
        detail = {"ok": result["ok"]}
    else:
        abort(404)
    body, mime = render(tables, fmt)
    st = _store()
    with st.transaction():
        _views().log("export", what=f"audit-{what}.{fmt}", detail=detail)
    resp = make_response(body)
    resp.headers["Content-Type"] = mime
    resp.headers["Content-Disposition"] = f'attachment; filename="minqing-audit-{what}-{stamp}.{fmt}"'
    return resp


def init_app(app: Flask) -> None:
    """Register the auditor's pages (they need the coordinator web at request time)."""
    app.register_blueprint(bp)

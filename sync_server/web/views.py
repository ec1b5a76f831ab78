"""The coordinator web's pages (blueprint ``coord`` under ``/web``).

::

    GET POST  /web/login                     log in (throttled; CSRF by a login cookie)
    POST      /web/logout
    GET       /web/lang/<zh|en>              language cookie, back to ?next=
    GET       /web/cases                     the merged caseload: filters with counts, sort, pages, search
    GET       /web/cases/<id>                one case: records, deadlines, conflicts, the whole timeline
    POST      /web/cases/<id>/show-numbers   show this case's ID numbers and phones (logged, 5 minutes)
    GET       /web/conflicts                 the conflict queue
    POST      /web/conflicts/<cid>           resolve: a server ``resolve`` op that syncs to the laptops
    GET       /web/board                     warnings at a glance (一图): colours by unit, backlog, overdue
    GET       /web/report?month=YYYY-MM      the monthly report
    GET POST  /web/handover?leader=NAME      a leader's open cases; POST records the handover (离任交接)
    GET       /web/access-log                who saw what (auditor, administrator)
    GET POST  /web/accounts                  accounts and the confidential permission (administrator)
    GET       /web/export/<what>.<csv|xlsx>  every list above and the report, with the page's filters

Every POST carries the CSRF token; every page needs a login with the right permission.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import Markup, escape
from werkzeug.wrappers import Response

from schema import enums as E
from schema.errors import MinqingError
from schema.lifecycle import OPEN_STATES
from schema.obligations import CHINA
from sync_server.errors import BadRequest, NotFound
from sync_server.service import SyncService
from sync_server.store import ServerStore
from sync_server.users import ROLES, check_password
from sync_server.web import auth, board, caseload, casepage, conflicts, export, report
from sync_server.web.caseindex import BOOL_DIMS, DIMS, SORTS, CaseIndex
from sync_server.web.i18n import (
    LANG_COOKIE,
    LANGS,
    N_,
    _,
    entity_label,
    enum_label,
    field_label,
    lang,
    rule_label,
)
from sync_server.web.present import fmt_dt, fmt_ms, show_value, stamp_ms
from sync_server.web.privacy import ACCUSATION, Viewer

bp = Blueprint("coord", __name__, url_prefix="/web", template_folder="templates", static_folder="static",
               static_url_path="/static")

PUBLIC = frozenset({"coord.login", "coord.set_lang", "coord.static"})
LOG_IDS = 200  # case ids kept in one access-log entry


class CsrfRefused(MinqingError):
    """A POST without the form's token."""

    code = "web.csrf"


class Forbidden(MinqingError):
    code = "web.forbidden"


class Throttled(MinqingError):
    code = "web.throttled"


# ---------------------------------------------------------------------------
# Per-request plumbing
# ---------------------------------------------------------------------------

def store() -> ServerStore:
    stores: Any = current_app.extensions["minqing_coord_stores"]
    store_: ServerStore = stores.get()
    return store_


def index() -> CaseIndex:
    idx: CaseIndex = current_app.extensions["minqing_coord_index"]
    return idx


def rules() -> Any:
    return current_app.config.get("RULES")


def now_ms() -> int:
    return int(g.now_ms)


def client_ip() -> str:
    return request.remote_addr or "?"


def viewer() -> Viewer:
    v: Viewer | None = g.get("viewer")
    if v is None:
        s = g.get("session")
        v = Viewer(bool(s and s.user.confidential), dict(s.grants) if s else {}, hidden_text=_("(confidential)"))
        g.viewer = v
    return v


def flash(message: str, category: str = "ok") -> None:
    s = g.get("session")
    if s is not None:
        s.flash.append([category, message])
        g.flash_dirty = True


def take_flashes() -> list[list[str]]:
    s = g.get("session")
    if s is None or not s.flash:
        return []
    out, s.flash = s.flash, []
    g.flash_dirty = True
    return out


def safe_next(target: str | None) -> str:
    if not target:
        return url_for("coord.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/web") or "\\" in target:
        return url_for("coord.home")
    return target


def csrf_token() -> str:
    s = g.get("session")
    if s is not None:
        return str(s.csrf)
    token = request.cookies.get(auth.LOGIN_COOKIE) or g.get("new_login_token")
    if not token:
        import secrets

        token = secrets.token_urlsafe(24)
        g.new_login_token = token
    return str(token)


def csrf_field() -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % csrf_token()


def secure_cookies() -> bool:
    forced = current_app.config.get("COORD_SECURE_COOKIES")
    return bool(request.is_secure if forced is None else forced)


def log(action: str, *, case_id: str | None = None, what: str | None = None, detail: Any = None) -> None:
    s = g.get("session")
    auth.log_access(store().conn, now_ms(), s.user.username if s else "-", action, case_id=case_id, what=what,
                    ip=client_ip(), detail=detail)


def log_confidential(action: str, v: Viewer, *, what: str | None = None) -> None:
    """Write one access-log entry for the accusation cases this request showed unmasked."""
    if not v.confidential_seen:
        return
    ids = sorted(v.confidential_seen)
    log(action, case_id=ids[0] if len(ids) == 1 else None, what=what,
        detail={"cases": ids[:LOG_IDS], "count": len(ids)})


def needs(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            s = g.get("session")
            if s is None:
                return redirect(url_for("coord.login", next=request.full_path if request.method == "GET" else None))
            if not s.user.can(permission):
                raise Forbidden(_("Your account may not open this page."))
            return view(*args, **kwargs)
        return wrapper
    return deco


@bp.before_request
def before() -> Response | None:
    cookie = request.cookies.get(LANG_COOKIE)
    g.lang = cookie if cookie in LANGS else "zh"
    st = store()
    g.now_ms = st.now_ms()
    g.session = auth.find_session(st.conn, request.cookies.get(auth.SESSION_COOKIE), g.now_ms)
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint == "coord.static":
        return None
    sent = request.form.get("csrf_token", "")
    if request.endpoint == "coord.login":
        if not auth.csrf_ok(sent, request.cookies.get(auth.LOGIN_COOKIE)):
            raise CsrfRefused(_("This form has expired or did not come from this page, so it was not used. "
                                "Reload the page and try again."))
        return None
    if g.session is None:
        return redirect(url_for("coord.login"))
    if not auth.csrf_ok(sent, g.session.csrf):
        log("csrf_refused", what=request.path)
        raise CsrfRefused(_("This form has expired or did not come from this page, so it was not used. "
                            "Reload the page and try again."))
    return None


@bp.after_request
def after(resp: Response) -> Response:
    s = g.get("session")
    if s is not None and g.get("flash_dirty"):
        auth.save_flash(store().conn, s)
    token = g.get("new_login_token")
    if token and not request.cookies.get(auth.LOGIN_COOKIE):
        resp.set_cookie(auth.LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=secure_cookies(),
                        path="/web")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    if request.endpoint != "coord.static":
        resp.headers["Cache-Control"] = "no-store"  # pages hold personal data
    resp.headers["Content-Language"] = "zh-CN" if lang() == "zh" else "en"
    return resp


@bp.app_context_processor
def context() -> dict[str, Any]:
    if request.blueprint != "coord" and not request.path.startswith("/web"):
        return {}
    s = g.get("session")
    nxt = request.full_path if request.method == "GET" else url_for("coord.home")
    info: dict[str, Any] = {
        "user": s.user if s else None,
        "role_label": role_label(s.user.role) if s else "",
        "lang_links": {c: url_for("coord.set_lang", code=c, next=safe_next(nxt)) for c in LANGS},
        "open_conflicts": None,
        "audit_url": None,
    }
    if s is not None and s.user.can("access_log") and "itaudit" in current_app.blueprints:
        info["audit_url"] = url_for("itaudit.devices")  # the IT audit pages (sync_server/audit_web.py)
    if s is not None and s.user.can("casework"):
        try:
            info["open_conflicts"] = conflicts.count_open(store().conn)
        except MinqingError:
            info["open_conflicts"] = None
    return info


ROLE_LABELS = {"coordinator": N_("Coordinator"), "auditor": N_("Auditor (IT)"), "admin": N_("Administrator")}


def role_label(role: str) -> str:
    msgid = ROLE_LABELS.get(role)
    return _(msgid) if msgid else role


# ---------------------------------------------------------------------------
# Logging in and out, language
# ---------------------------------------------------------------------------

@bp.route("/")
def home() -> Response:
    s = g.get("session")
    if s is None:
        return redirect(url_for("coord.login"))
    if s.user.can("casework"):
        return redirect(url_for("coord.cases"))
    if s.user.can("accounts"):
        return redirect(url_for("coord.accounts"))
    return redirect(url_for("coord.access_log"))


def _wait_text(ms: int) -> str:
    seconds = max(1, -(-ms // 1000))
    if seconds < 120:
        return _("%(n)s seconds", n=seconds)
    return _("%(n)s minutes", n=-(-seconds // 60))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if g.get("session") is not None and request.method == "GET":
        return redirect(safe_next(request.args.get("next")))
    error = None
    status = 200
    username = ""
    if request.method == "POST":
        username = str(request.form.get("username", "")).strip()[:64]
        password = str(request.form.get("password", ""))
        ip = client_ip()
        st = store()
        with st.transaction():
            wait = auth.locked_for_ms(st.conn, username, ip, now_ms())
            if wait:
                auth.log_access(st.conn, now_ms(), username or "-", "login_throttled", ip=ip)
        if wait:
            error = _("Too many wrong passwords. Logging in is locked for %(wait)s; try again then, "
                      "or ask the administrator.", wait=_wait_text(wait))
            status = 429
        else:
            row = check_password(st.conn, username, password) if username and password else None
            with st.transaction():
                if row is None:
                    lock = auth.record_failure(st.conn, username or "-", ip, now_ms())
                    auth.log_access(st.conn, now_ms(), username or "-", "login_failed", ip=ip)
                else:
                    auth.clear_failures(st.conn, username, ip)
                    user = auth.User(row["username"], row["display_name"], row["role"], row["confidential"])
                    token = auth.start_session(st.conn, user, ip, now_ms())
                    auth.log_access(st.conn, now_ms(), user.username, "login", ip=ip)
            if row is None:
                error = _("The username or password is not right.")
                if lock:
                    error += " " + _("Logging in is now locked for %(wait)s.", wait=_wait_text(lock))
                status = 401
            else:
                resp = redirect(safe_next(request.args.get("next") or request.form.get("next")))
                resp.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=secure_cookies(),
                                path="/web")
                return resp
    return render_template("coord/login.html", error=error, username=username,
                           next=request.args.get("next", "")), status


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    s = g.get("session")
    if s is not None:
        st = store()
        with st.transaction():
            auth.end_session(st.conn, s)
            auth.log_access(st.conn, now_ms(), s.user.username, "logout", ip=client_ip())
    g.session = None
    resp = redirect(url_for("coord.login"))
    resp.delete_cookie(auth.SESSION_COOKIE, path="/web")
    return resp


@bp.route("/lang/<code>")
def set_lang(code: str) -> Response:
    if code not in LANGS:
        abort(404)
    resp = redirect(safe_next(request.args.get("next")))
    resp.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True,
                    secure=secure_cookies(), path="/")
    return resp


# ---------------------------------------------------------------------------
# The caseload
# ---------------------------------------------------------------------------

DIM_LABELS: dict[str, str] = {
    "township": N_("Township"), "village": N_("Village"), "state": N_("State"), "category": N_("Category"),
    "subject": N_("Type of matter"), "level": N_("Handling level"), "colour": N_("Warning colour"),
    "overdue": N_("Overdue"), "awaiting": N_("Awaiting sync"), "backlog": N_("Backlog"),
    "leader": N_("Leader"), "conflicts": N_("Open conflicts"), "voided": N_("Voided"),
}
SORT_LABELS: dict[str, str] = {
    "received": N_("Newest first"), "due": N_("Next deadline first"), "colour": N_("Most urgent colour first"),
    "case_no": N_("Case number"), "updated": N_("Recently changed first"),
}
DIM_ENUMS = {"state": "state", "category": "category", "subject": "subject", "level": "level", "colour": "colour"}
DIM_ENUM_CLASSES: dict[str, Any] = {"state": E.State, "category": E.Category, "subject": E.Subject, "level": E.Level,
                                    "colour": E.Colour}


def dim_label(d: str) -> str:
    return _(DIM_LABELS[d])


def value_label(d: str, v: str, lg: str | None = None) -> str:
    idx = index()
    if d in DIM_ENUMS:
        return enum_label(DIM_ENUMS[d], v, lg)
    if d in BOOL_DIMS:
        if d == "voided":
            return _("Voided only") if v == "1" else _("Not voided")
        return _("Yes") if v == "1" else _("No")
    if d == "township":
        return idx.nodes.name(v) if v else _("County level")
    if d == "village":
        return idx.nodes.name(v) if v else _("No village (township or county level)")
    if d == "leader":
        return v if v else _("No leader assigned")
    return v


def filter_options(page: caseload.Page) -> list[dict[str, Any]]:
    """Each filter with its options and their counts (the other filters applied)."""
    idx = index()
    out = []
    for d in DIMS:
        counts = page.counts.get(d, {})
        if d in DIM_ENUMS:
            values = [m.value for m in DIM_ENUM_CLASSES[d]]
        elif d in BOOL_DIMS:
            values = ["1", "0"]
        elif d == "township":
            values = idx.nodes.of_level("township") + ([""] if counts.get("") else [])
        elif d == "village":
            town = page.filters.get("township")
            towns = [town] if town else idx.nodes.of_level("township")
            values = [v for t in towns if t for v in idx.nodes.children(t, "village")]
            if counts.get(""):
                values.append("")
        else:  # leader
            values = sorted(v for v in counts if v and v != "*") + ([""] if counts.get("") else [])
        selected = page.filters.get(d)
        chosen = caseload.url_value(selected) if selected is not None else ""
        out.append({"dim": d, "label": dim_label(d), "options_html": options_html(d, values, counts, chosen)})
    return out


def options_html(d: str, values: list[str], counts: Mapping[str, int], chosen: str) -> Markup:
    """A filter's ``<option>``s, each with its count (built here: a page has a few hundred)."""
    idx = index()
    lg = lang()
    everything = _("All (%(n)s)", n=counts.get("*", 0))
    parts = [f'<option value="">{escape(everything)}</option>']
    group: str | None = None
    for v in values:
        if d == "village" and v:
            g = idx.nodes.name(idx.nodes.rows.get(v, ("", "", None))[2])
            if g != group:
                parts.append(("</optgroup>" if group is not None else "") + f'<optgroup label="{escape(g)}">')
                group = g
        value = caseload.url_value(v)
        n = counts.get(v, 0)
        sel = " selected" if value == chosen else ""
        parts.append(f'<option value="{escape(value)}"{sel} data-count="{n}">{escape(value_label(d, v, lg))} ({n})'
                     "</option>")
    if group is not None:
        parts.append("</optgroup>")
    return Markup("".join(parts))


def _args_without(args: Mapping[str, Any], *drop: str, **set_: Any) -> str:
    keep = {k: v for k, v in args.items() if k not in drop and v not in ("", None)}
    keep.update({k: v for k, v in set_.items() if v not in ("", None)})
    return urlencode(keep)


def shown_rows(rows: list[dict[str, Any]], v: Viewer) -> list[dict[str, Any]]:
    """The caseload's rows as this viewer may see them, every text ready (the list shows many)."""
    href = url_for("coord.case", case_id="0")[:-1]
    county_rules = rules()
    now = now_ms()
    words = {"overdue": _("overdue"), "late": _("overdue %(n)s d"), "awaiting": _("awaiting sync"),
             "backlog": _("backlog"), "conflicts": _("%(n)s conflict(s)"), "secret": _("confidential")}
    labels: dict[tuple[str, Any], str] = {}

    lg = lang()

    def label(kind: str, value: Any) -> str:
        got = labels.get((kind, value))
        if got is None:
            got = labels[(kind, value)] = enum_label(kind, value, lg)
        return got

    out = []
    for r in rows:
        petitioners = [p for p in r["parties"] if p["role"] == "petitioner"] or r["parties"][:1]
        names = [str(v.party_value(r, p, "name", p["name"])) for p in petitioners[:3]]
        due_ms = _due_ms(r.get("next_due"))
        late = max(0, (now - due_ms) // 86_400_000) if due_ms and r.get("overdue") else 0
        tags = []
        if r.get("overdue"):
            tags.append(("tag-overdue", words["late"] % {"n": late} if late else words["overdue"]))
        if r.get("awaiting_sync"):
            tags.append(("", words["awaiting"]))
        if r.get("backlog"):
            tags.append(("", words["backlog"]))
        if r.get("open_conflicts"):
            tags.append(("tag-conflict", words["conflicts"] % {"n": r["open_conflicts"]}))
        out.append({**r, "href": href + r["id"], "title_shown": v.case_value(r, "title", r["title"]),
                    "secret": words["secret"] if r["category"] == ACCUSATION else "",
                    "petitioners": "、".join(dict.fromkeys(n for n in names if n)),
                    "place": r["township_name"] + (" · " + r["village_name"] if r["village_name"] else ""),
                    "state_label": label("state", r["state"]), "level_label": label("level", r["level"]),
                    "category_label": label("category", r["category"]),
                    "subject_label": label("subject", r["subject"]),
                    "colour_label": label("colour", r["colour"]), "tags": tags,
                    "due_text": fmt_dt(r.get("next_due")), "rule_text": rule_label(r.get("next_rule"), county_rules),
                    "late_days": late, "received_text": fmt_dt(r.get("received_at")),
                    "leaders_text": "、".join(r["leaders"])})
    return out


def rows_html(rows: list[dict[str, Any]]) -> Markup:
    """The caseload table's rows (built here, not in Jinja: a page shows fifty, each with a dozen cells)."""
    e = escape
    out = []
    for r in rows:
        secret = f' <span class="tag tag-secret">{e(r["secret"])}</span>' if r["secret"] else ""
        tags = "".join(f' <span class="tag {e(css)}">{e(text)}</span>' for css, text in r["tags"])
        rule = f'<br><small class="muted">{e(r["rule_text"])}</small>' if r["rule_text"] else ""
        out.append(
            f'<tr class="case-row{" voided" if r["voided"] else ""}">'
            f'<td><a href="{e(r["href"])}" class="case-link">{e(r["case_no"])}</a></td>'
            f'<td>{e(r["title_shown"] or "")}{secret}</td><td class="petitioner">{e(r["petitioners"])}</td>'
            f'<td>{e(r["place"])}</td><td>{e(r["state_label"])}</td>'
            f'<td>{e(r["level_label"])} · {e(r["node_name"])}</td>'
            f'<td>{e(r["category_label"])}<br><small class="muted">{e(r["subject_label"])}</small></td>'
            f'<td><span class="badge badge-{e(r["colour"])}">{e(r["colour_label"])}</span>{tags}</td>'
            f'<td>{e(r["due_text"])}{rule}</td><td>{e(r["leaders_text"])}</td><td>{e(r["received_text"])}</td></tr>')
    return Markup("\n".join(out))


def _due_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


@bp.route("/cases")
@needs("casework")
def cases() -> str:
    v = viewer()
    page = caseload.page(store().conn, index(), request.args, v, size=caseload.PAGE_SIZE)
    rows = shown_rows(page.rows, v)
    log_confidential("list_confidential", v, what="cases")
    args = {k: request.args.get(k, "") for k in (*DIMS, "q", "sort")}
    active = [{"dim": d, "label": dim_label(d), "value": value_label(d, val),
               "remove": url_for("coord.cases") + "?" + _args_without(args, d, "page")}
              for d, val in page.filters.items()]
    pages = page_links(page.page, page.pages)
    return render_template(
        "coord/cases.html", page=page, rows=rows, rows_html=rows_html(rows), filters=filter_options(page),
        active=active,
        sorts=[(s, _(SORT_LABELS[s])) for s in SORTS], args=args, pages=pages,
        page_url=lambda n: url_for("coord.cases") + "?" + _args_without(args, "page", page=n),
        export_query=_args_without(args, "page"), first=(page.page - 1) * caseload.PAGE_SIZE + 1,
    )


def page_links(current: int, last: int) -> list[int | None]:
    wanted = {1, last, current - 2, current - 1, current, current + 1, current + 2}
    out: list[int | None] = []
    prev = 0
    for n in sorted(x for x in wanted if 1 <= x <= last):
        if n - prev > 1:
            out.append(None)
        out.append(n)
        prev = n
    return out


# ---------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------

RECORD_SECTIONS = (
    ("party", N_("Parties")), ("visit", N_("Visits")), ("mediation", N_("Mediation sessions")),
    ("notice", N_("Notices served")), ("leader_assignment", N_("Leader assignment")),
    ("evaluation", N_("Evaluations")), ("note", N_("Notes")),
)
RELATED_KINDS = {"repeat": N_("Repeat petition"), "skip_level": N_("Skip-level petition"),
                 "final_refiled": N_("Petition on a finalised matter"), "related": N_("Related case")}


@bp.route("/cases/<case_id>")
@needs("casework")
def case(case_id: str) -> str:
    v = viewer()
    st = store()
    detail = casepage.case_detail(st, case_id, v, rules(), index().nodes)
    queue = [conflict_view(c, detail["case"], v, detail["by_id"], detail["devices"], detail["received"],
                           detail["parties"]) for c in detail["conflicts"]]
    log_confidential("view_confidential", v, what="case")
    return render_template(
        "coord/case.html", d=detail, c=detail["case"], v=v, conflicts=queue,
        sections=[(e, _(label)) for e, label in RECORD_SECTIONS],
        related_kinds={k: _(m) for k, m in RELATED_KINDS.items()}, shows_numbers=v.shows_numbers(case_id),
        colour_label=enum_label("colour", detail["status"]["colour"]), county_rules=rules(),
    )


@bp.route("/cases/<case_id>/show-numbers", methods=["POST"])
@needs("casework")
def show_numbers(case_id: str) -> Response:
    st = store()
    row = st.conn.execute("SELECT case_no FROM cases WHERE id=?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(_("There is no such case on the county server."), code="web.case_not_found")
    with st.transaction():
        auth.grant(st.conn, g.session, f"numbers:{case_id}", now_ms())
        log("show_numbers", case_id=case_id, what=row[0])
    flash(_("ID numbers and phones of this case are shown for 5 minutes; this has been logged."))
    return redirect(url_for("coord.case", case_id=case_id) + "#parties")


# ---------------------------------------------------------------------------
# Conflicts
# ---------------------------------------------------------------------------

def conflict_view(c: Mapping[str, Any], case_row: Mapping[str, Any], v: Viewer, by_id: Mapping[str, Any],
                  devices: casepage.DeviceLabels, received: Mapping[str, int],
                  parties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A conflict as the queue shows it: each value masked for the viewer, with who and when."""
    party = parties.get(c["entity_id"]) if c["entity"] == "party" else None
    hidden = conflicts.hides({**c, "category": case_row.get("category")}, party.get("role") if party else None, v)
    values = []
    for item in c["values"]:
        if c["kind"] == "invalid_transition":
            text = enum_label("action", item.get("action"))
        else:
            raw = v.record_value(case_row, c["entity"], c["field"], item["value"], party=party)
            text = raw if raw == v.hidden_text else show_value(c["entity"], c["field"], raw)
        values.append({**item, "text": text, "device_label": devices.label(item["device"]),
                       "recorded": fmt_ms(stamp_ms(item["stamp"]), seconds=True),
                       "occurred": fmt_dt(item["occurred_at"]),
                       "received": fmt_ms(received.get(item["op_id"]), seconds=True)})
    from schema.entities import ENTITIES

    spec = ENTITIES[c["entity"]].field_map.get(c["field"])
    resolved = by_id.get(c.get("resolved_by") or "")
    return {
        "id": c["id"], "entity": c["entity"], "entity_label": entity_label(c["entity"]),
        "field": c["field"], "field_label": field_label(c["entity"], c["field"]) if spec else _("State"),
        "kind": c["kind"], "kind_label": enum_label("conflict", c["kind"]), "status": c["status"],
        "reason": casepage.refusal(c.get("reason")) if c.get("reason") else "",
        "opened": fmt_ms(stamp_ms(c.get("opened_stamp")), seconds=True), "values": values, "hidden": hidden,
        "mergeable": bool(spec and spec.kind in conflicts.MERGEABLE_KINDS and c["kind"] == "concurrent_edit"),
        "widget": ("textarea" if spec and spec.kind == "text" else "select" if spec and spec.kind == "enum"
                   else "text"),
        "options": [(m.value, enum_label(spec.enum, m.value)) for m in spec.enum] if spec and spec.enum else [],
        "case_id": c["case_id"], "case_no": case_row.get("case_no"),
        "resolved_by": {"author": resolved.author, "recorded": fmt_ms(stamp_ms(resolved.stamp), seconds=True)}
        if resolved else None,
    }


def queue_entries(v: Viewer, *, limit: int = 500) -> list[dict[str, Any]]:
    st = store()
    rows = conflicts.open_conflicts(st.conn, limit=limit)
    op_ids = sorted({oid for c in rows for oid in c["op_ids"]})
    by_id = conflicts.ops_by_id(st.conn, op_ids)
    devices = casepage.DeviceLabels.load(st, index().nodes)
    received: dict[str, int] = {}
    party_ids = [c["entity_id"] for c in rows if c["entity"] == "party"]
    parties: dict[str, dict[str, Any]] = {}
    for i in range(0, len(party_ids), 500):
        chunk = party_ids[i : i + 500]
        for pid, role in st.conn.execute(f"SELECT id, role FROM parties WHERE id IN ({', '.join('?' * len(chunk))})",
                                         chunk):
            parties[pid] = {"id": pid, "role": role}
    for case_id in sorted({c["case_id"] for c in rows}):
        received.update(st.received_ms(case_id))
    out = []
    for c in rows:
        case_row = {"id": c["case_id"], "case_no": c["case_no"], "category": c["category"], "title": c["title"]}
        entry = conflict_view({**c, "values": casepage.conflict_values(st, c, by_id)}, case_row, v, by_id, devices,
                              received, parties)
        entry["case_title"] = v.case_value(case_row, "title", c["title"])
        entry["origin"] = index().nodes.name(c["origin_node"])
        out.append(entry)
    return out


@bp.route("/conflicts")
@needs("casework")
def conflict_queue() -> str:
    v = viewer()
    entries = queue_entries(v)
    log_confidential("view_confidential", v, what="conflicts")
    return render_template("coord/conflicts.html", entries=entries)


@bp.route("/conflicts/<conflict_id>", methods=["POST"])
@needs("resolve")
def resolve_conflict(conflict_id: str) -> Response:
    st = store()
    back = safe_next(request.form.get("next")) if request.form.get("next") else url_for("coord.conflict_queue")
    row = st.conn.execute("SELECT f.case_id, f.entity, f.entity_id, f.field, c.category FROM conflicts f "
                          "LEFT JOIN cases c ON c.id = f.case_id WHERE f.id=? AND f.status='open'",
                          (conflict_id,)).fetchone()
    if row is None:
        flash(_("That conflict is no longer open; nothing was changed."), "error")
        return redirect(back)
    role = None
    if row[1] == "party":
        r = st.conn.execute("SELECT role FROM parties WHERE id=?", (row[2],)).fetchone()
        role = r[0] if r else None
    if conflicts.hides({"entity": row[1], "field": row[3], "category": row[4]}, role, viewer()):
        raise Forbidden(_("This conflict concerns a reporter's identity; a coordinator with the "
                          "confidential permission must resolve it."))
    svc = SyncService(st, rules=rules())
    try:
        op = conflicts.resolve(svc, conflict_id, choice=str(request.form.get("choice", "")),
                               merged=str(request.form.get("merged", "")), username=g.session.user.username)
    except BadRequest as exc:
        messages = {"web.no_choice": _("Choose one of the values, or write a merged one."),
                    "web.bad_value": _("The merged value is not acceptable for this field: %(why)s", why=exc.message),
                    "web.not_mergeable": _("This field takes no written value; choose one of the values.")}
        flash(messages.get(exc.code, exc.message), "error")
        return redirect(back + "#c-" + conflict_id)
    except NotFound:
        flash(_("That conflict is no longer open; nothing was changed."), "error")
        return redirect(back)
    with st.transaction():
        log("resolve_conflict", case_id=row[0], what=conflict_id, detail={"op_id": op.op_id})
    flash(_("Conflict resolved. The laptops receive the resolution with their next sync."))
    return redirect(back)


# ---------------------------------------------------------------------------
# Warnings at a glance (一图)
# ---------------------------------------------------------------------------

def board_data() -> dict[str, Any]:
    st = store()
    idx = index()
    st.conn.execute("BEGIN")
    try:
        idx.refresh(st.conn)
        towns, villages, total = board.units(idx)
        overdue_ids = board.overdue_rows(idx, st.conn)
        overdue = shown_rows(caseload.rows_for(st.conn, overdue_ids, idx), viewer())
        since = datetime.fromtimestamp((now_ms() - 30 * 86_400_000) / 1000, CHINA).isoformat()
        escalated = board.escalations(st.conn, since)
    finally:
        st.conn.execute("COMMIT")
    for t in towns:
        if not t.code:
            t.name = _("County level")
    for vr in villages:
        if not vr.code:
            vr.name = _("%(township)s (own cases)", township=vr.name)
    for e in escalated:
        e["raised_text"] = fmt_dt(e["raised_at"])
        e["rule_text"] = rule_label(e["rule"], rules())
        e["level_label"] = enum_label("level", e["level"])
        e["node_name"] = idx.nodes.name(e["node"])
        e["origin_name"] = idx.nodes.name(e["origin_node"])
        e["state_label"] = enum_label("state", e["state"])
    return {"towns": towns, "villages": villages, "total": total, "overdue": overdue, "escalated": escalated}


@bp.route("/board")
@needs("casework")
def board_page() -> str:
    data = board_data()
    labels = {c: enum_label("colour", c) for c in board.COLOURS}
    charts = {"towns": Markup(board.svg_chart(data["towns"], labels, title=_("Open cases by township and colour"),
                                              unit_label=_("Township"), chart_id="chart-towns"))}
    by_town: list[tuple[Any, Markup]] = []
    for t in data["towns"]:
        rows = [r for r in data["villages"] if r.parent == t.code] if t.code else []
        if any(r.open for r in rows):
            by_town.append((t, Markup(board.svg_chart(rows, labels, title=_("Open cases in %(t)s by village", t=t.name),
                                                      unit_label=_("Village"), chart_id=f"chart-{t.code}"))))
    log_confidential("list_confidential", viewer(), what="board")
    return render_template("coord/board.html", **data, charts=charts, by_town=by_town, colours=board.COLOURS,
                           labels=labels)


# ---------------------------------------------------------------------------
# The monthly report and leaders' handover
# ---------------------------------------------------------------------------

def _month() -> str:
    month = str(request.args.get("month") or report.this_month(now_ms()))
    try:
        report.month_bounds(month)
    except ValueError:
        raise BadRequest(_("The month should be written as YYYY-MM, e.g. 2026-11."), code="web.bad_month") from None
    return month


@bp.route("/report")
@needs("casework")
def report_page() -> str:
    month = _month()
    rep = report.build(store().conn, index().nodes, rules(), month, now_ms())
    v = viewer()
    for a in rep.leaders:
        a["title_shown"] = v.case_value({"id": a["case_id"], "category": a["category"]}, "title", a["title"])
    log_confidential("list_confidential", v, what="report")
    return render_template("coord/report.html", r=rep, month=month, leaders=report.leaders(store().conn),
                           targets=report.TARGET_SHARE)


@bp.route("/handover", methods=["GET", "POST"])
@needs("casework")
def handover() -> Any:
    st = store()
    leader = str(request.values.get("leader", "")).strip()[:100]
    if not leader:
        return redirect(url_for("coord.report_page") + "#leaders")
    items = report.leader_cases(st.conn, index().nodes, leader=leader, open_only=True)
    errors: dict[str, str] = {}
    successor = ""
    if request.method == "POST":
        successor = str(request.form.get("successor", "")).strip()[:100]
        if not successor:
            errors["successor"] = _("Name the leader who takes the cases over.")
        elif successor == leader:
            errors["successor"] = _("The successor must be another person.")
        elif not items:
            errors["successor"] = _("This leader holds no open case to hand over.")
        else:
            today = datetime.fromtimestamp(now_ms() / 1000, CHINA).date().isoformat()
            bases = {}
            for a in items:
                state = st.replica.fold_state("leader_assignment", a["id"]) or {"win": {}}
                bases[a["id"]] = {f: (state["win"].get(f) or [None])[0] for f in ("ended_at", "handed_over_to")}
            specs = report.handover_specs(items, successor, today, bases)
            svc = SyncService(st, rules=rules())
            with st.transaction():
                svc.author_in_transaction(specs, author=g.session.user.username,
                                          occurred_at=datetime.fromtimestamp(now_ms() / 1000, CHINA)
                                          .isoformat(timespec="seconds"))
                log("handover", what=leader, detail={"successor": successor, "cases": [a["case_id"] for a in items]})
            flash(_("Handover recorded: %(n)s case(s) of %(from)s now with %(to)s.", n=len(items), **{"from": leader},
                    to=successor))
            return redirect(url_for("coord.handover", leader=successor))
    v = viewer()
    for a in items:
        a["title_shown"] = v.case_value({"id": a["case_id"], "category": a["category"]}, "title", a["title"])
    log_confidential("list_confidential", v, what="handover")
    return render_template("coord/handover.html", leader=leader, items=items, errors=errors, successor=successor), (
        422 if errors else 200)


# ---------------------------------------------------------------------------
# Access log and accounts
# ---------------------------------------------------------------------------

ACTIONS: dict[str, str] = {
    "login": N_("Logged in"), "login_failed": N_("Wrong password"), "login_throttled": N_("Login refused: locked"),
    "logout": N_("Logged out"), "view_confidential": N_("Saw a reporter's identity"),
    "list_confidential": N_("Saw reporters' identities in a list"), "show_numbers": N_("Showed ID numbers and phones"),
    "export": N_("Exported"), "export_confidential": N_("Exported with reporters' identities"),
    "resolve_conflict": N_("Resolved a conflict"), "handover": N_("Recorded a leader's handover"),
    "account": N_("Changed an account"), "csrf_refused": N_("Form refused (no valid token)"),
}


def action_label(action: str) -> str:
    msgid = ACTIONS.get(action)
    return _(msgid) if msgid else action


def access_rows(limit: int | None = 200) -> tuple[int, list[dict[str, Any]]]:
    total, rows = auth.access_entries(store().conn, username=request.args.get("username") or None,
                                      action=request.args.get("action") or None, limit=limit)
    for r in rows:
        r["when"] = fmt_ms(r["at_ms"], seconds=True)
        r["action_label"] = action_label(r["action"])
        detail = json.loads(r["detail"]) if r["detail"] else None
        r["detail_text"] = (_("%(n)s case(s)", n=detail["count"]) if isinstance(detail, dict) and "count" in detail
                            else json.dumps(detail, ensure_ascii=False) if detail else "")
    return total, rows


@bp.route("/access-log")
@needs("access_log")
def access_log() -> str:
    total, rows = access_rows()
    return render_template("coord/access_log.html", rows=rows, total=total,
                           actions=[(k, action_label(k)) for k in ACTIONS],
                           args={k: request.args.get(k, "") for k in ("username", "action")})


@bp.route("/accounts", methods=["GET", "POST"])
@needs("accounts")
def accounts() -> Any:
    from sync_server.users import list_users

    st = store()
    if request.method == "POST":
        username = str(request.form.get("username", ""))
        change = str(request.form.get("change", ""))
        known = {u["username"] for u in list_users(st.conn)}
        if username not in known or change not in ("confidential_on", "confidential_off", "disable", "enable",
                                                   "unlock"):
            raise BadRequest(_("That change is not known."), code="web.bad_request")
        if username == g.session.user.username and change == "disable":
            flash(_("You cannot disable your own account."), "error")
            return redirect(url_for("coord.accounts"))
        with st.transaction():
            if change.startswith("confidential"):
                st.conn.execute("UPDATE users SET confidential=? WHERE username=?",
                                (int(change == "confidential_on"), username))
                auth.end_sessions_of(st.conn, username)  # the permission takes effect at the next login
            elif change in ("disable", "enable"):
                st.conn.execute("UPDATE users SET disabled=? WHERE username=?", (int(change == "disable"), username))
                if change == "disable":
                    auth.end_sessions_of(st.conn, username)
            else:
                auth.clear_failures(st.conn, username)
            log("account", what=username, detail={"change": change})
        flash(_("Account %(user)s changed.", user=username))
        return redirect(url_for("coord.accounts"))
    users = list_users(st.conn)
    for u in users:
        u["role_label"] = role_label(u["role"])
        u["created"] = fmt_ms(u["created_ms"])
    return render_template("coord/accounts.html", users=users, roles=ROLES)


# ---------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------

def _case_table(rows: list[dict[str, Any]], title: str) -> export.Table:
    headers = [field_label("case", "case_no"), field_label("case", "title"), _("Petitioner"), _("Township"),
               _("Village"), enum_label_header("state"), field_label("case", "level"), _("Handling unit"),
               field_label("case", "category"), field_label("case", "subject"), _("Warning colour"),
               _("Next deadline"), _("Deadline rule"), _("Overdue"), _("Days overdue"), _("Awaiting sync"),
               _("Backlog"), _("Leader"), _("Open conflicts"), field_label("case", "received_at")]
    body = [[r["case_no"], r["title_shown"], r["petitioners"], r["township_name"], r["village_name"],
             r["state_label"], r["level_label"], r["node_name"], r["category_label"], r["subject_label"],
             r["colour_label"], r["due_text"], r["rule_text"], _("Yes") if r.get("overdue") else _("No"),
             r["late_days"] or "", _("Yes") if r.get("awaiting_sync") else _("No"),
             _("Yes") if r.get("backlog") else _("No"), "、".join(r["leaders"]), r["open_conflicts"] or 0,
             r["received_text"]] for r in rows]
    return export.Table(title, headers, body)


def enum_label_header(name: str) -> str:
    return _("State") if name == "state" else name


def _units_table(title: str, units: list[Any], labels: dict[str, str]) -> export.Table:
    headers = [_("Unit"), *[labels[c] for c in board.COLOURS], _("Open cases"), _("Overdue"), _("Awaiting sync"),
               _("Backlog"), _("Backlog index (per 100 open)")]
    rows = [[u.name, *[u.counts.get(c, 0) for c in board.COLOURS], u.open, u.overdue, u.awaiting, u.backlog,
             u.backlog_index if u.backlog_index is not None else ""] for u in units]
    return export.Table(title, headers, rows)


def _rate(r: report.Rate) -> str:
    return "" if r.value is None else f"{r.value}%"


def _report_tables(rep: report.Report) -> list[export.Table]:
    def unit_rows(units: list[report.UnitFigures], with_parent: bool) -> list[list[Any]]:
        out = []
        for u in units:
            row: list[Any] = [u.rank, u.name]
            if with_parent:
                row.append(index().nodes.name(u.parent))
            row += [u.received, u.closed, _rate(u.acceptance), _rate(u.closure), _rate(u.participation),
                    _rate(u.satisfaction), u.open_overdue, u.backlog]
            out.append(row)
        return out

    rate_headers = [_("Received"), _("Closed"), _("Timely acceptance"), _("On-time closure"), _("Participation"),
                    _("Satisfaction"), _("Open overdue"), _("Backlog")]
    c = rep.county
    tables = [
        export.Table(_("Rates"), [_("Figure"), _("Rate"), _("Numerator"), _("Denominator")], [
            [_("Timely acceptance"), _rate(c.acceptance), c.acceptance.num, c.acceptance.den],
            [_("On-time closure"), _rate(c.closure), c.closure.num, c.closure.den],
            [_("Participation"), _rate(c.participation), c.participation.num, c.participation.den],
            [_("Satisfaction"), _rate(c.satisfaction), c.satisfaction.num, c.satisfaction.den],
        ]),
        export.Table(_("Resolved by level"), [_("Level"), _("Cases closed"), _("Share"), _("Target")], [
            [enum_label("level", lv), rep.levels.get(lv, 0),
             "" if rep.level_share(lv) is None else f"{rep.level_share(lv)}%", f"{report.TARGET_SHARE[lv]}%"]
            for lv in ("village", "township", "county")]),
        export.Table(_("Township ranking"), [_("Rank"), _("Township"), *rate_headers],
                     unit_rows(rep.townships, False)),
        export.Table(_("Village ranking"), [_("Rank"), _("Village"), _("Township"), *rate_headers],
                     unit_rows(rep.villages, True)),
        export.Table(_("Villages with no new petitions"), [_("Village"), _("Township")],
                     [[v.name, index().nodes.name(v.parent)] for v in rep.quiet_villages]),
        _leader_table(rep.leaders, _("Leader-assigned cases")),
    ]
    return tables


def _leader_table(items: list[dict[str, Any]], title: str) -> export.Table:
    headers = [_("Leader"), field_label("case", "case_no"), field_label("case", "title"), _("Origin"), _("State"),
               _("Warning colour"), field_label("leader_assignment", "handler"),
               field_label("leader_assignment", "assigned_at"), _("Progress entry due"), _("Progress"),
               field_label("leader_assignment", "progress")]
    rows = [[a["leader"], a["case_no"], a.get("title_shown", ""), a["origin_name"], enum_label("state", a["state"]),
             enum_label("colour", a["colour"]), a["handler"], a["assigned_at"], fmt_dt(a["progress_due"]),
             enum_label("obligation_state", a["progress_state"]) if a["progress_state"] else "", a["progress"] or ""]
            for a in items]
    return export.Table(title, headers, rows)


@bp.route("/export/<what>.<fmt>")
def export_file(what: str, fmt: str) -> Any:
    permission = "access_log" if what == "access-log" else "export"
    return needs(permission)(_export_file)(what, fmt)


def _export_file(what: str, fmt: str) -> Response:
    if fmt not in ("csv", "xlsx"):
        abort(404)
    v = viewer()
    st = store()
    stamp = datetime.fromtimestamp(now_ms() / 1000, CHINA).strftime("%Y%m%d-%H%M")
    if what == "cases":
        page = caseload.all_rows(st.conn, index(), request.args, v)
        tables = [_case_table(shown_rows(page.rows, v), _("Caseload"))]
        detail: dict[str, Any] = {"rows": page.total, "filters": page.filters, "q": page.q}
    elif what == "conflicts":
        entries = queue_entries(v, limit=100_000)
        rows = []
        for e in entries:
            for val in e["values"]:
                rows.append([e["case_no"], e["case_title"], e["origin"], e["entity_label"], e["field_label"],
                             e["kind_label"], e["reason"], e["opened"], val["text"], val["author"],
                             val["device_label"], val["recorded"], val["received"]])
        tables = [export.Table(_("Conflicts"), [field_label("case", "case_no"), field_label("case", "title"),
                                                _("Origin"), _("Record"), _("Field"), _("Kind"), _("Why refused"),
                                                _("Opened"), _("Value"), _("Author"), _("Device"), _("Recorded"),
                                                _("Received by the server")], rows)]
        detail = {"rows": len(rows)}
    elif what == "board":
        data = board_data()
        labels = {c: enum_label("colour", c) for c in board.COLOURS}
        tables = [_units_table(_("By township"), data["towns"], labels),
                  _units_table(_("By village"), data["villages"], labels),
                  _case_table(data["overdue"], _("Overdue and awaiting sync")),
                  export.Table(_("Escalations in 30 days"), [field_label("case", "case_no"), _("Escalated at"),
                                                             _("Deadline rule"), _("Now at level"),
                                                             _("Handling unit"), _("Origin"), _("State")],
                               [[e["case_no"], e["raised_text"], e["rule_text"], e["level_label"], e["node_name"],
                                 e["origin_name"], e["state_label"]] for e in data["escalated"]])]
        detail = {"rows": len(data["overdue"])}
    elif what == "report":
        month = _month()
        rep = report.build(st.conn, index().nodes, rules(), month, now_ms())
        for a in rep.leaders:
            a["title_shown"] = v.case_value({"id": a["case_id"], "category": a["category"]}, "title", a["title"])
        tables = _report_tables(rep)
        detail = {"month": month}
        stamp = month
    elif what == "handover":
        leader = str(request.args.get("leader", ""))
        items = report.leader_cases(st.conn, index().nodes, leader=leader, open_only=True)
        for a in items:
            a["title_shown"] = v.case_value({"id": a["case_id"], "category": a["category"]}, "title", a["title"])
        tables = [_leader_table(items, _("Handover list"))]
        detail = {"leader": leader, "rows": len(items)}
    elif what == "access-log":
        _total, rows_ = access_rows(limit=None)
        tables = [export.Table(_("Access log"), [_("When"), _("User"), _("Action"), _("Case"), _("What"),
                                                 _("Address"), _("Detail")],
                               [[r["when"], r["username"], r["action_label"], r["case_id"] or "", r["what"] or "",
                                 r["ip"], r["detail_text"]] for r in rows_])]
        detail = {"rows": len(rows_)}
    else:
        abort(404)
    body, mime = export.render(tables, fmt)
    with st.transaction():
        log("export", what=f"{what}.{fmt}", detail=detail)
        log_confidential("export_confidential", v, what=f"{what}.{fmt}")
    resp = make_response(body)
    resp.headers["Content-Type"] = mime
    name = f"minqing-{what}-{stamp}.{fmt}"
    resp.headers["Content-Disposition"] = f"attachment; filename=\"{name}\""
    return resp


@bp.app_template_global()
def coord_url(endpoint: str, **values: Any) -> str:
    return url_for(endpoint, **values)


def jinja_globals() -> dict[str, Any]:
    return {
        "csrf_field": csrf_field, "field_label": field_label, "entity_label": entity_label,
        "enum_label": enum_label, "fmt_dt": fmt_dt, "fmt_ms": fmt_ms, "lang": lang, "rule_label": rule_label,
        "dim_label": dim_label, "take_flashes": take_flashes, "ACCUSATION": ACCUSATION,
        "OPEN_STATES": OPEN_STATES,
    }

"""The county coordinator's web: the merged caseload, conflicts, warnings, the monthly report.

``init_app(app)`` adds it to the county server's Flask app (``sync_server.app.create_app``)
under ``/web`` (``/`` redirects there). Pages are rendered on the server, in Chinese by
default (English available), with no JavaScript and no CDN; the chart is SVG drawn here.
docs/coordinator.md describes the pages, the accounts and permissions, the access log
and the caseload index.

Modules: ``views`` (routes), ``auth`` (sessions, throttling, CSRF, roles, access log),
``privacy`` (what each user may see of a person), ``caseindex`` (the caseload in memory as
bitmaps), ``caseload``, ``casepage``, ``conflicts``, ``board``, ``report``, ``export``,
``i18n``, ``present``, ``db`` (the web's tables and connections).

Errors on these pages are a page with a sentence in the reader's language and a code;
never a traceback (the API keeps its JSON errors: the handlers are chosen by path).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, make_response, redirect, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from conflict.errors import ReplicaError
from schema.errors import MinqingError
from sync_server.web.caseindex import CaseIndex
from sync_server.web.db import Stores
from sync_server.web.i18n import (
    CATALOGUE_KEY,
    DEFAULT_LANG,
    LANG_COOKIE,
    LANGS,
    N_,
    Catalogue,
    _,
    lang,
)

log = logging.getLogger("minqing.coord")
HERE = Path(__file__).parent
PREFIX = "/web"

ERROR_MESSAGES: dict[str, str] = {
    "web.csrf": N_("This form has expired or did not come from this page, so it was not used. "
                   "Reload the page and try again."),
    "web.forbidden": N_("Your account may not open this page."),
    "web.case_not_found": N_("There is no such case on the county server."),
    "web.bad_month": N_("The month should be written as YYYY-MM, e.g. 2026-11."),
    "web.internal": N_("Something went wrong inside the server. Nothing was changed by this page. "
                       "Please tell the IT staff the code and reference below."),
    "replica.busy": N_("The county database is busy. Please try again in a moment."),
    "replica.damaged": N_("The county database cannot be read. Please tell the IT staff at once."),
    "http.400": N_("The request could not be understood."),
    "http.403": N_("This is not allowed."),
    "http.404": N_("There is no such page."),
    "http.405": N_("This page cannot be used that way."),
    "http.413": N_("What was sent is too large."),
}


def _status(exc: MinqingError) -> int:
    from sync_server.errors import BadRequest, NotFound
    from sync_server.web.views import CsrfRefused, Forbidden, Throttled

    if isinstance(exc, CsrfRefused | BadRequest):
        return 400
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Throttled):
        return 429
    if isinstance(exc, ReplicaError):
        return 503
    return 400


def _page(status: int, code: str, message: str, ref: str | None = None) -> Response:
    if "lang" not in g:
        cookie = request.cookies.get(LANG_COOKIE)
        g.lang = cookie if cookie in LANGS else DEFAULT_LANG
    try:
        body = render_template("coord/error.html", status=status, code=code, message=message, ref=ref)
    except Exception:  # noqa: BLE001 - the error page itself failed: a plain sentence, no traceback
        log.exception("error page failed")
        body = f"出错了 / Error {status} ({code})"
    resp = make_response(body, status)
    resp.headers["Content-Type"] = "text/html; charset=utf-8"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _message(code: str, status: int) -> str:
    msgid = ERROR_MESSAGES.get(code) or ERROR_MESSAGES.get(f"http.{status}") or ERROR_MESSAGES["web.internal"]
    return _(msgid)


def on_web_error(exc: BaseException) -> Response:
    """Every error on a /web page: a sentence and a code; a reference for unexpected ones."""
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        return _page(status, f"http.{status}", _message(f"http.{status}", status))
    if isinstance(exc, MinqingError):
        status = _status(exc)
        if isinstance(exc, ReplicaError):
            current_app.extensions["minqing_coord_stores"].drop()
        log.warning("refused: %s %s", exc.code, exc.message)
        # the web's own refusals carry a sentence already in the reader's language
        own = exc.message if exc.code.startswith("web.") else None
        return _page(status, exc.code, own or _message(exc.code, status))
    if isinstance(exc, sqlite3.Error):
        current_app.extensions["minqing_coord_stores"].drop()
        log.error("database error: %s", exc)
        return _page(503, "replica.busy", _message("replica.busy", 503))
    ref = secrets.token_hex(4)
    log.exception("unexpected error on %s, reference %s", request.path, ref)
    return _page(500, "web.internal", _message("web.internal", 500), ref=ref)


def _dispatch(app: Flask, cls: type[Exception]) -> None:
    """Route errors under /web to the web's pages; leave the API's handler for the rest."""
    spec = app.error_handler_spec.setdefault(None, {}).setdefault(None, {})
    original: Callable[[Any], Any] | None = spec.get(cls)

    def handler(exc: Any) -> Any:
        if request.path == PREFIX or request.path.startswith(PREFIX + "/") or request.path == "/":
            return on_web_error(exc)
        if original is not None:
            return original(exc)
        if isinstance(exc, HTTPException):
            return exc
        raise exc

    app.register_error_handler(cls, handler)


def init_app(app: Flask) -> None:
    """Register the coordinator web on the county server's app."""
    from sync_server.web import views

    data_dir = app.config["DATA_DIR"]
    app.extensions["minqing_coord_stores"] = Stores(data_dir, app.config.get("MINQING_CLOCK"))
    app.extensions["minqing_coord_index"] = CaseIndex()
    app.extensions[CATALOGUE_KEY] = Catalogue(HERE / "translations")
    app.config.setdefault("COORD_SECURE_COOKIES", None)  # None: Secure when the request came over https
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda s: current_app.extensions[CATALOGUE_KEY].gettext(lang(), s),
        ngettext=lambda s, p, n: current_app.extensions[CATALOGUE_KEY].gettext(lang(), s if n == 1 else p),
        newstyle=True,
    )
    app.jinja_env.globals.update(views.jinja_globals())
    app.register_blueprint(views.bp)
    app.add_url_rule("/", "coord_root", lambda: redirect(PREFIX + "/"))
    for cls in (HTTPException, MinqingError, Exception):
        _dispatch(app, cls)


__all__ = ["init_app"]

"""The sync API, a Flask blueprint under ``/api/v1`` (docs/sync.md).

Envelopes travel as ``application/octet-stream``; everything else is JSON. Every error
is ``{"ok": false, "error": {"code", "message", "details"}}`` with its HTTP status, and
no traceback ever leaves the server. The OpenAPI document is generated from the
marshmallow schemas below with apispec, at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from schema.errors import MinqingError
from sync_server.errors import status_for
from sync_server.service import SyncService
from sync_server.store import ServerStore

bp = Blueprint("sync", __name__, url_prefix="/api/v1")
log = logging.getLogger("minqing.sync")
OCTET = "application/octet-stream"


class ErrorBody(Schema):
    """The one error body of every refusal."""

    class Inner(Schema):
        code = fields.String(required=True, metadata={"description": "stable code, e.g. envelope.bad_signature"})
        message = fields.String(required=True, metadata={"description": "a sentence for people"})
        details = fields.Raw(allow_none=True)

    ok = fields.Boolean(required=True, metadata={"example": False})
    error = fields.Nested(Inner, required=True)


class EnrollRequest(Schema):
    """What a laptop sends to enroll (docs/sync.md "Identity and enrollment")."""

    token = fields.String(required=True)
    device_id = fields.String(required=True)
    x25519 = fields.String(required=True, metadata={"description": "raw public key, hex"})
    ed25519 = fields.String(required=True, metadata={"description": "raw public key, hex"})
    node = fields.String(required=True)
    proof = fields.String(required=True, metadata={"description": "Ed25519 signature over enroll|token|device_id|x25519"})
    app_version = fields.String()
    user = fields.String()


class NodeInfo(Schema):
    code = fields.String()
    name = fields.String()
    level = fields.String()
    parent = fields.String(allow_none=True)


class ServerKeysBody(Schema):
    node_id = fields.String()
    x25519 = fields.String()
    ed25519 = fields.String()


class EnrollAnswer(Schema):
    ok = fields.Boolean()
    device_id = fields.String()
    node = fields.Nested(NodeInfo)
    ancestors = fields.List(fields.Nested(NodeInfo))
    subtree = fields.List(fields.String())
    server = fields.Nested(ServerKeysBody)
    server_time_ms = fields.Integer()


class PingAnswer(Schema):
    ok = fields.Boolean()
    node_id = fields.String()
    server_time_ms = fields.Integer()
    version = fields.String()


def service() -> SyncService:
    if "sync_service" not in g:
        clock = current_app.config.get("MINQING_CLOCK")  # the demo's own clock; real time otherwise
        g.sync_store = ServerStore(current_app.config["DATA_DIR"], **({"clock": clock} if clock else {}))
        g.sync_service = SyncService(g.sync_store, rules=current_app.config.get("RULES"))
    return g.sync_service  # type: ignore[no-any-return]


def close_store(_exc: BaseException | None = None) -> None:
    store = g.pop("sync_store", None)
    g.pop("sync_service", None)
    if store is not None:
        store.close()


def error_response(exc: MinqingError, status: int | None = None) -> Response:
    resp = jsonify(exc.to_dict())
    resp.status_code = status or status_for(exc)
    return resp


def carrier() -> str:
    return f"{request.remote_addr or '?'} {request.headers.get('User-Agent', '')[:60]}"


def body_bytes() -> bytes:
    if request.mimetype != OCTET:
        raise MinqingError(f"expected {OCTET}", code="sync.bad_request")
    return request.get_data(cache=False)


def json_body() -> Any:
    """The request's JSON, or None when it is not JSON: nested too deep for the parser, or
    holding a string that is not Unicode text (a lone surrogate escape, which no column holds)."""
    try:
        body = request.get_json(silent=True)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (RecursionError, UnicodeEncodeError):
        return None
    return body


@bp.get("/ping")
def ping() -> Response:
    """Is the server there, and what time is it.
    ---
    get:
      summary: Health and server time (no authentication; reveals nothing)
      responses:
        200:
          description: OK
          content:
            application/json:
              schema: PingAnswer
    """
    svc = service()
    from sync_server import __version__

    return jsonify({"ok": True, "node_id": svc.keys.node_id, "server_time_ms": svc.store.now_ms(),
                    "version": __version__})


@bp.post("/enroll")
def enroll() -> Response:
    """Enroll a laptop with a one-time code.
    ---
    post:
      summary: Register a device's public keys, bound to the code's node
      requestBody:
        required: true
        content:
          application/json:
            schema: EnrollRequest
      responses:
        200:
          description: OK
          content:
            application/json:
              schema: EnrollAnswer
        400:
          description: malformed request or refused envelope (see error.code)
          content:
            application/json:
              schema: ErrorBody
        403:
          description: revoked device or refused enrollment
          content:
            application/json:
              schema: ErrorBody
    """
    body = json_body()
    if not isinstance(body, dict):
        raise MinqingError("请求体应为 JSON 对象 (the body must be a JSON object)", code="sync.bad_request")
    return jsonify(service().enroll(body, carrier=carrier()))


@bp.post("/push")
def push() -> Response:
    """Send one change-set envelope.
    ---
    post:
      summary: A device's change set, sealed and signed (docs/protocol.md); answered with an answer envelope
      requestBody:
        required: true
        content:
          application/octet-stream:
            schema: {type: string, format: binary}
      responses:
        200:
          description: an answer envelope sealed to the device (acks, quarantined ops)
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
        400:
          description: malformed request or refused envelope (see error.code)
          content:
            application/json:
              schema: ErrorBody
        401:
          description: unknown device
          content:
            application/json:
              schema: ErrorBody
        403:
          description: revoked device or refused enrollment
          content:
            application/json:
              schema: ErrorBody
        409:
          description: sequence number reused with other content
          content:
            application/json:
              schema: ErrorBody
        413:
          description: body too large
          content:
            application/json:
              schema: ErrorBody
    """
    result = service().receive(body_bytes(), carrier=carrier())
    log.info("push device=%s applied=%s duplicate=%s quarantined=%s", request.remote_addr,
             result.applied, result.duplicate, len(result.quarantined))
    return Response(result.answer, mimetype=OCTET)


@bp.post("/pull")
def pull() -> Response:
    """Ask for the ops of the device's scope past its cursor.
    ---
    post:
      summary: A signed request envelope; answered with ops sealed to the device
      requestBody:
        required: true
        content:
          application/octet-stream:
            schema: {type: string, format: binary}
      responses:
        200:
          description: an answer envelope sealed to the device (ops, cursor, more)
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
        400:
          description: malformed request or refused envelope (see error.code)
          content:
            application/json:
              schema: ErrorBody
        401:
          description: unknown device
          content:
            application/json:
              schema: ErrorBody
        403:
          description: revoked device or refused enrollment
          content:
            application/json:
              schema: ErrorBody
    """
    return Response(service().pull(body_bytes(), carrier=carrier()), mimetype=OCTET)


class ReenrollRequest(EnrollRequest):
    """A laptop restored from an old copy becomes a new device (docs/audit.md "Device lifecycle")."""

    replaces = fields.String(required=True, metadata={"description": "the old device id the code was made for"})
    old_proof = fields.String(required=True, metadata={
        "description": "the old device's Ed25519 signature over reenroll|token|old_id|new_id|x25519|ed25519"})


class ReenrollAnswer(EnrollAnswer):
    replaces = fields.String()
    closed_seq = fields.Integer(metadata={"description": "the last sequence number of the old id; it takes no more"})


ENVELOPE_ERRORS = """
        400:
          description: malformed request or refused envelope (see error.code)
          content:
            application/json:
              schema: ErrorBody
        401:
          description: unknown device
          content:
            application/json:
              schema: ErrorBody
        403:
          description: revoked device (details carry the signed erase order)
          content:
            application/json:
              schema: ErrorBody
        409:
          description: the device id was replaced (sync.device_replaced) or the request conflicts
          content:
            application/json:
              schema: ErrorBody
"""


@bp.post("/verify")
def verify() -> Response:
    """Compare a device's op set with the server's for its scope (ids and stamps only).
    ---
    post:
      summary: A signed request envelope with the device's op-set digest and per-day digests; answered with the server's digest and the (op id, stamp) pairs of the days that differ (docs/sync.md "Verify")
      requestBody:
        required: true
        content:
          application/octet-stream:
            schema: {type: string, format: binary}
      responses:
        200:
          description: an answer envelope sealed to the device (verify)
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
    """
    from sync_server.audit import scope_verify

    return Response(scope_verify(service(), body_bytes(), carrier=carrier()), mimetype=OCTET)


@bp.post("/rotate")
def rotate() -> Response:
    """Record a device's new keys, signed by its current key.
    ---
    post:
      summary: A signed request envelope carrying new public keys, the new key's proof and the first sequence number it signs; answered sealed to the new key (docs/audit.md)
      requestBody:
        required: true
        content:
          application/octet-stream:
            schema: {type: string, format: binary}
      responses:
        200:
          description: an answer envelope sealed to the device's new X25519 key
          content:
            application/octet-stream:
              schema: {type: string, format: binary}
    """
    from sync_server.lifecycle import rotate as rotate_keys

    return Response(rotate_keys(service(), body_bytes(), carrier=carrier()), mimetype=OCTET)


@bp.post("/reenroll")
def reenroll() -> Response:
    """Re-enroll a laptop restored from an old copy under a new device id.
    ---
    post:
      summary: New keys and device id with IT's re-enrollment code; the old id's sequence is closed
      requestBody:
        required: true
        content:
          application/json:
            schema: ReenrollRequest
      responses:
        200:
          description: OK
          content:
            application/json:
              schema: ReenrollAnswer
        400:
          description: malformed request (see error.code)
          content:
            application/json:
              schema: ErrorBody
        403:
          description: refused re-enrollment (enroll.* codes)
          content:
            application/json:
              schema: ErrorBody
    """
    from sync_server.lifecycle import reenroll as reenroll_device

    body = json_body()
    if not isinstance(body, dict):
        raise MinqingError("请求体应为 JSON 对象 (the body must be a JSON object)", code="sync.bad_request")
    return jsonify(reenroll_device(service(), body, carrier=carrier()))


for _view in (verify, rotate):
    _view.__doc__ = (_view.__doc__ or "").rstrip() + ENVELOPE_ERRORS


def openapi_spec(app: Flask) -> dict[str, Any]:
    from sync_server import __version__

    spec = APISpec(
        title="Minqing sync API", version=__version__, openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Sealed, signed change sets between field laptops and the county server."},
    )
    for name, schema in (("ErrorBody", ErrorBody), ("EnrollRequest", EnrollRequest),
                         ("EnrollAnswer", EnrollAnswer), ("PingAnswer", PingAnswer),
                         ("ReenrollRequest", ReenrollRequest), ("ReenrollAnswer", ReenrollAnswer)):
        spec.components.schema(name, schema=schema)
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        operations = load_operations_from_docstring(view.__doc__ or "")
        if rule.rule.startswith("/api/v1/") and operations:
            spec.path(path=rule.rule, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document of this API.
    ---
    get:
      summary: This document (OpenAPI 3, generated from the marshmallow schemas)
      responses:
        200:
          description: OK
          content:
            application/json:
              schema: {type: object}
    """
    return jsonify(openapi_spec(current_app))


def log_refusal(exc: MinqingError) -> None:
    """Record a refusal that happened before the service saw the request (bad body, size)."""
    try:
        store = g.get("sync_store") or ServerStore(current_app.config["DATA_DIR"])
        with store.transaction():
            store.log_refusal(exc.code, exc.message, size=request.content_length, carrier=carrier())
        if "sync_store" not in g:
            store.close()
    except MinqingError:
        log.exception("could not log a refusal")


def register_errors(app: Flask) -> None:
    """Every error, expected or not, becomes the one JSON body; no traceback leaves."""

    @app.errorhandler(MinqingError)
    def on_minqing(exc: MinqingError) -> Response:
        if not getattr(exc, "logged", False) and request.path.startswith("/api/"):
            log_refusal(exc)
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def on_http(exc: HTTPException) -> Response:
        code = {404: "sync.not_found", 405: "sync.method_not_allowed", 413: "sync.too_large"}.get(
            exc.code or 500, "sync.http_error")
        err = MinqingError(exc.description or exc.name, code=code)
        if request.path.startswith("/api/") and (exc.code or 500) != 404:
            log_refusal(err)
        return error_response(err, exc.code or 500)

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(MinqingError("服务器内部错误，已记录 (internal error; it has been logged)",
                                           code="sync.internal"), 500)

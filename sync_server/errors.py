"""Errors of the county server, each with a stable code and an HTTP status.

    MinqingError (schema.errors)
    └── ServerError             anything the server refuses (``status`` for HTTP)
        ├── BadRequest          400  ``sync.bad_request``
        ├── UnknownDevice       401  ``sync.unknown_device``
        ├── DeviceRevoked       403  ``sync.device_revoked`` (details carry the signed erase order)
        ├── EnrollRefused       403  ``enroll.*``
        ├── NotFound            404  ``sync.not_found``
        ├── Conflict            409  ``sync.conflict``
        ├── TooLarge            413  ``sync.too_large``
        └── ConfigError         ``server.*`` at start-up (bad data folder, bad CSV)

``status_for`` maps any MinqingError (an ``envelope.*`` one is 400) to its status; the
API renders all of them through one JSON body (``schema.errors.MinqingError.to_dict``).
"""

from __future__ import annotations

from schema.errors import MinqingError


class ServerError(MinqingError):
    """Anything the server refuses."""

    code = "server.error"
    status = 400


class BadRequest(ServerError):
    """The request is malformed."""

    code = "sync.bad_request"
    status = 400


class UnknownDevice(ServerError):
    """The sender is not an enrolled device."""

    code = "sync.unknown_device"
    status = 401


class DeviceRevoked(ServerError):
    """The device has been revoked; it is told to erase its data."""

    code = "sync.device_revoked"
    status = 403


class EnrollRefused(ServerError):
    """An enrollment code or proof that cannot be accepted."""

    code = "enroll.refused"
    status = 403


class NotFound(ServerError):
    """No such thing on this server."""

    code = "sync.not_found"
    status = 404


class Conflict(ServerError):
    """The request conflicts with what the server holds."""

    code = "sync.conflict"
    status = 409


class TooLarge(ServerError):
    """The body exceeds the limit."""

    code = "sync.too_large"
    status = 413


class ConfigError(ServerError):
    """The server's data folder or an input file is not usable."""

    code = "server.config"


def status_for(exc: MinqingError) -> int:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    if exc.code == "envelope.too_large":
        return 413
    return 400

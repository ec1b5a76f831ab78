"""Errors raised by the data model, with stable codes.

The exception tree::

    MinqingError                 every error this project raises on purpose
    └── SchemaError              data that does not fit the model
        ├── OpInvalid            one op failed validation (code ``op.*``)
        ├── OpsRejected          a batch held invalid ops; nothing was applied
        ├── StampInvalid         an HLC stamp that does not parse (``op.bad_stamp``)
        └── TransitionRefused    the state machine does not allow a transition here

Every error carries ``code`` (stable, for programs), ``message`` (a sentence for people)
and ``details`` (JSON-serialisable, e.g. marshmallow's errors by field path).
``to_dict()`` gives the body that every program-facing error uses::

    {"ok": false, "error": {"code": "...", "message": "...", "details": ...}}
"""

from __future__ import annotations

from typing import Any


class MinqingError(Exception):
    """Base of every error raised on purpose; has a stable ``code``."""

    code = "minqing.error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The program-facing error body."""
        return {
            "ok": False,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        }


class SchemaError(MinqingError):
    """Data that does not fit the model."""

    code = "schema.invalid"


class OpInvalid(SchemaError):
    """One op failed validation; ``details`` maps field paths to messages."""

    code = "op.invalid"


class StampInvalid(OpInvalid):
    """An HLC stamp that does not parse."""

    code = "op.bad_stamp"


class OpsRejected(SchemaError):
    """A batch of ops held invalid ones; ``details`` lists each with its code."""

    code = "ops.rejected"

    def __init__(self, errors: list[OpInvalid], *, indexes: list[int] | None = None) -> None:
        self.errors = errors
        idx = indexes if indexes is not None else list(range(len(errors)))
        first = errors[0]
        super().__init__(
            f"{len(errors)} op(s) rejected; nothing was applied. First: {first.message}",
            details=[
                {"index": i, "code": e.code, "message": e.message, "details": e.details}
                for i, e in zip(idx, errors, strict=True)
            ],
        )


class TransitionRefused(SchemaError):
    """The case state machine does not allow this action from where the case stands."""

    code = "transition.refused"

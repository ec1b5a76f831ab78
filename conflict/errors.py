"""Errors of the merge core and the replica.

    MinqingError (schema.errors)
    ├── OpInvalid
    │   └── OpIdReused          one op id, two different contents (``op.id_reused``)
    └── ReplicaError            the replica's database could not do what was asked
        ├── ReplicaDamaged      the file is not a replica or is corrupt (``replica.damaged``)
        └── ReplicaBusy         another process holds the write lock (``replica.busy``)

``translate_sqlite`` is the one place where ``sqlite3`` exceptions become these.
"""

from __future__ import annotations

import sqlite3

from schema.errors import MinqingError, OpInvalid


class OpIdReused(OpInvalid):
    """An op arrived with the id of a stored op but different content."""

    code = "op.id_reused"


class ReplicaError(MinqingError):
    """The replica's database could not do what was asked."""

    code = "replica.error"


class ReplicaDamaged(ReplicaError):
    """The file is not a replica database, or it is corrupt."""

    code = "replica.damaged"


class ReplicaBusy(ReplicaError):
    """Another process holds the database's write lock."""

    code = "replica.busy"


def translate_sqlite(exc: sqlite3.Error, path: str) -> ReplicaError:
    """Map a sqlite3 exception to a ReplicaError with a sentence for people."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return ReplicaDamaged(
            f"the database file {path} is damaged or is not a Minqing replica ({text}); "
            "it has not been changed. Restore it from a backup or ask IT.",
            details={"path": path, "sqlite": text},
        )
    if "locked" in text or "busy" in text:
        return ReplicaBusy(
            f"the database {path} is in use by another program; try again in a moment",
            details={"path": path, "sqlite": text},
        )
    return ReplicaError(f"database error on {path}: {text}", details={"path": path, "sqlite": text})

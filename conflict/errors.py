"""Errors of the merge core and the replica.

    MinqingError (schema.errors)
    ├── OpInvalid
    │   └── OpIdReused          one op id, two different contents (``op.id_reused``)
    └── ReplicaError            the replica's database could not do what was asked
        ├── ReplicaDamaged      the file is not a replica or is corrupt (``replica.damaged``)
        └── ReplicaBusy         another process holds the write lock (``replica.busy``)

``conflict.replica.translate_sqlite`` is the one place where ``sqlite3`` exceptions become these.
"""

from __future__ import annotations

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

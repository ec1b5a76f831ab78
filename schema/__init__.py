"""The data model of Minqing (民情): entities, enums, ops, validation, stamps, lifecycle.

Bytes and plain values in, plain values out: nothing here touches a database, a
network or Flask (DESIGN.md, "The packages and what each may touch").
"""

from schema.ops import SCHEMA_VERSION, ChangeSet, Op

__all__ = ["SCHEMA_VERSION", "ChangeSet", "Op"]

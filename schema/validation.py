"""Validation of ops: every op from outside passes ``parse_op`` before anything applies it.

The envelope of an op (ids, stamp, kind, ...) is checked in plain Python; its ``values``
by marshmallow schemas built from ``schema.entities``, one per (entity, kind). Errors are
``OpInvalid`` with a stable code and ``details`` keyed by field path (``values.category``).

Codes:
  op.not_a_mapping, op.missing_field, op.unknown_op_field, op.bad_id, op.bad_stamp,
  op.device_mismatch, op.bad_author, op.bad_time, op.bad_version, op.unknown_entity,
  op.unknown_kind, op.kind_not_for_entity, op.bad_case_id, op.unknown_field,
  op.missing_value, op.wrong_type, op.bad_value, op.unknown_action, op.not_settable,
  op.bad_base

Personal fields may hold a sealed token (``enc1:...``, the laptop's at-rest encryption)
when ``allow_sealed`` is true. Ops written with a newer ``schema_version`` than ours
keep fields we do not know (they stay in the log); for our version or older, an unknown
field is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import cache
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from schema import lifecycle
from schema.entities import ENTITIES, EntitySpec, FieldSpec
from schema.enums import Decision, Level, OpKind
from schema.errors import OpInvalid, OpsRejected
from schema.ops import OP_FIELDS, SCHEMA_VERSION, Op
from schema.stamp import NODE_RE, STAMP_RE

HEX32 = re.compile(r"[0-9a-f]{32}")
SEALED_PREFIX = "enc1:"
ID_RE = re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]")
PHONE_RE = re.compile(r"(1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})")

# Our own messages, so that errors can be classified into codes without relying on
# marshmallow's wording.
MSG_REQUIRED = "缺少必填值 / missing required value"
MSG_TYPE = "类型不对 / wrong type"
MSG_NULL = "不能为空 / may not be null"
MSG_UNKNOWN = "未知字段 / unknown field"
FIELD_MESSAGES: dict[str, str | list[Any] | dict[Any, Any]] = {"required": MSG_REQUIRED, "invalid": MSG_TYPE, "null": MSG_NULL}


def _id_checksum_ok(value: str) -> bool:
    if ID_RE.fullmatch(value) is None:
        return False
    if len(value) == 15:
        return True
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(value[:17], weights, strict=True))
    return "10X98765432"[total % 11] == value[17].upper()


class StrictBool(fields.Field):
    """true or false, nothing else (marshmallow's Boolean also takes "yes" and 1)."""

    default_error_messages = {"invalid": MSG_TYPE}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid")


class StrictInt(fields.Integer):
    """An integer, not a bool, not a string of digits."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


class Sealable(fields.Field):
    """A personal field: a sealed token as-is, or a plain value checked by ``inner``."""

    def __init__(self, inner: fields.Field, allow_sealed: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.allow_sealed = allow_sealed

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if self.allow_sealed and isinstance(value, str) and value.startswith(SEALED_PREFIX):
            return value
        return self.inner.deserialize(value, attr, data, **kwargs)


def _plain_field(spec: FieldSpec, *, required: bool, nonblank: bool = False) -> fields.Field:
    kw: dict[str, Any] = {"required": required, "error_messages": FIELD_MESSAGES}
    lengths = validate.Length(min=1 if (required or nonblank) else 0, max=spec.max_len)
    if spec.kind in ("str", "text"):
        return fields.String(validate=validate.And(lengths, _not_sealed), **kw)
    if spec.kind == "int":
        return StrictInt(validate=validate.Range(spec.minimum, spec.maximum), **kw)
    if spec.kind == "bool":
        return StrictBool(**kw)
    if spec.kind == "date":
        return fields.Date(format="iso", **kw)
    if spec.kind == "datetime":
        return fields.AwareDateTime(format="iso", **kw)
    if spec.kind == "enum":
        assert spec.enum is not None
        return fields.String(validate=validate.OneOf([m.value for m in spec.enum]), **kw)
    if spec.kind == "idnum":
        return fields.String(
            validate=validate.And(
                _check(lambda v: ID_RE.fullmatch(v) is not None, "身份证号格式无效 / bad ID format"),
                _check(_id_checksum_ok, "身份证号校验位不对 / ID checksum wrong"),
            ),
            **kw,
        )
    if spec.kind == "phone":
        return fields.String(
            validate=_check(lambda v: PHONE_RE.fullmatch(v) is not None, "电话号码无效 / invalid phone number"),
            **kw,
        )
    if spec.kind == "ref":
        return fields.String(validate=_check(_is_hex32, "无效编号 / bad id"), **kw)
    if spec.kind == "set":
        item = (
            fields.String(validate=validate.OneOf([m.value for m in spec.enum]))
            if spec.enum is not None
            else fields.String(validate=validate.Length(min=1, max=200))
        )
        return fields.List(item, **kw)
    raise AssertionError(f"unknown field kind {spec.kind}")


def _is_hex32(value: Any) -> bool:
    return isinstance(value, str) and HEX32.fullmatch(value) is not None


def _not_sealed(value: Any) -> Any:
    """A sealed token where none may stand (a non-personal field, or on the server)."""
    if isinstance(value, str) and value.startswith(SEALED_PREFIX):
        raise ValidationError("此处不能是加密值 / a sealed token is not allowed here")
    return value


def _check(fn: Any, error: str) -> Any:
    def run(value: Any) -> Any:
        if not fn(value):
            raise ValidationError(error)
        return value

    return run


def _field(spec: FieldSpec, *, required: bool, allow_sealed: bool, nonblank: bool = False) -> fields.Field:
    plain = _plain_field(spec, required=required, nonblank=nonblank)
    if spec.personal:
        return Sealable(
            plain, allow_sealed, required=required, allow_none=False, error_messages=FIELD_MESSAGES
        )
    return plain


def _schema_class(name: str, declared: dict[str, fields.Field]) -> type[Schema]:
    cls = Schema.from_dict(declared, name=name)
    cls.error_messages = {**cls.error_messages, "unknown": MSG_UNKNOWN}
    return cls


@cache
def values_schema(entity: str, kind: str, allow_sealed: bool, keep_unknown: bool) -> Schema:
    """The marshmallow schema for the values of (entity, create|set)."""
    spec = ENTITIES[entity]
    declared: dict[str, fields.Field] = {}
    for f in spec.fields:
        if kind == OpKind.SET and (f.create_only or f.immutable or f.kind == "set"):
            continue
        required = kind == OpKind.CREATE and f.required
        declared[f.name] = _field(f, required=required, allow_sealed=allow_sealed, nonblank=f.required)
    cls = _schema_class(f"{entity}_{kind}", declared)
    return cls(unknown=EXCLUDE if keep_unknown else RAISE)


def _transition_schema() -> Schema:
    declared: dict[str, fields.Field] = {
        "action": fields.String(required=True, error_messages=FIELD_MESSAGES),
        "acting_level": fields.String(
            required=True, validate=validate.OneOf(Level.values()), error_messages=FIELD_MESSAGES
        ),
        "to_node": fields.String(validate=validate.Length(min=1, max=32)),
        "from_level": fields.String(validate=validate.OneOf(Level.values())),
        "decision": fields.String(validate=validate.OneOf(Decision.values())),
        "days": StrictInt(validate=validate.Range(1, lifecycle.MAX_EXTENSION_DAYS)),
        "reason": fields.String(validate=validate.Length(max=2000)),
        "rule": fields.String(validate=validate.Length(max=64)),
    }
    return _schema_class("transition", declared)()


def _void_schema() -> Schema:
    return _schema_class(
        "void",
        {
            "reason": fields.String(
                required=True, validate=validate.Length(min=1, max=2000), error_messages=FIELD_MESSAGES
            )
        },
    )()


def _resolve_schema() -> Schema:
    return _schema_class(
        "resolve",
        {
            "resolves": fields.List(
                fields.String(validate=_check(_is_hex32, "无效编号 / bad op id")),
                required=True,
                validate=validate.Length(min=1, max=1000),
                error_messages=FIELD_MESSAGES,
            ),
            "field": fields.String(validate=validate.Length(min=1, max=64)),
            "value": fields.Raw(allow_none=True),
        },
    )()


def _setop_schema(remove: bool) -> Schema:
    declared: dict[str, fields.Field] = {
        "field": fields.String(required=True, error_messages=FIELD_MESSAGES),
        "items": fields.List(
            fields.String(validate=validate.Length(min=1, max=200)),
            required=True,
            validate=validate.Length(min=1, max=1000),
            error_messages=FIELD_MESSAGES,
        ),
    }
    if remove:
        declared["observed"] = fields.List(
            fields.String(validate=_check(_is_hex32, "无效编号 / bad op id")),
            required=True,
            validate=validate.Length(max=10000),
            error_messages=FIELD_MESSAGES,
        )
    return _schema_class("remove" if remove else "add", declared)()


TRANSITION_SCHEMA = _transition_schema()
VOID_SCHEMA = _void_schema()
RESOLVE_SCHEMA = _resolve_schema()
ADD_SCHEMA = _setop_schema(remove=False)
REMOVE_SCHEMA = _setop_schema(remove=True)


def _classify(errors: Any) -> str:
    """Pick the code for marshmallow errors by the messages we set."""
    flat: list[str] = []

    def walk(e: Any) -> None:
        if isinstance(e, dict):
            for v in e.values():
                walk(v)
        elif isinstance(e, list):
            for v in e:
                walk(v)
        else:
            flat.append(str(e))

    walk(errors)
    for msg, code in (
        (MSG_UNKNOWN, "op.unknown_field"),
        (MSG_REQUIRED, "op.missing_value"),
        (MSG_TYPE, "op.wrong_type"),
        (MSG_NULL, "op.wrong_type"),
    ):
        if msg in flat:
            return code
    if any(m.startswith("Not a valid") for m in flat):
        return "op.wrong_type"
    return "op.bad_value"


def _prefixed(errors: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(errors, dict):
        for k, v in errors.items():
            out[f"{prefix}.{k}"] = v
    else:
        out[prefix] = errors
    return out


def _bad(code: str, message: str, path: str, **context: Any) -> OpInvalid:
    """An OpInvalid whose details name the field path, like marshmallow's: {path: [message]}."""
    details: dict[str, Any] = {path: [message.split(": ", 1)[-1] if message.startswith("op ") else message]}
    if context:
        details["context"] = context
    return OpInvalid(message, code=code, details=details)


def _run(schema: Schema, data: Any, prefix: str, what: str) -> None:
    errors = schema.validate(data)
    if errors:
        code = _classify(errors)
        first_path, first_msgs = next(iter(_prefixed(errors, prefix).items()))
        raise OpInvalid(
            f"{what}: {first_path}: {first_msgs}",
            code=code,
            details=_prefixed(errors, prefix),
        )


DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _plain_ok(fs: FieldSpec, value: Any, nonblank: bool) -> bool:
    """True only when ``value`` certainly passes the field's marshmallow check (never a false yes)."""
    kind = fs.kind
    if kind in ("str", "text"):
        return (isinstance(value, str) and (1 if nonblank else 0) <= len(value) <= fs.max_len
                and not value.startswith(SEALED_PREFIX))
    if kind == "enum":
        return isinstance(value, str) and fs.enum is not None and value in fs.enum._value2member_map_
    if kind == "int":
        return (type(value) is int and (fs.minimum is None or value >= fs.minimum)
                and (fs.maximum is None or value <= fs.maximum))
    if kind == "bool":
        return value is True or value is False
    if kind == "datetime":
        if not (isinstance(value, str) and DATETIME_RE.fullmatch(value)):
            return False
        try:
            return datetime.fromisoformat(value).tzinfo is not None
        except ValueError:
            return False
    if kind == "date":
        if not (isinstance(value, str) and DATE_RE.fullmatch(value)):
            return False
        try:
            date.fromisoformat(value)
        except ValueError:
            return False
        return True
    if kind == "idnum":
        return isinstance(value, str) and _id_checksum_ok(value)
    if kind == "phone":
        return isinstance(value, str) and PHONE_RE.fullmatch(value) is not None
    if kind == "ref":
        return _is_hex32(value)
    if kind == "set":
        allowed = fs.enum._value2member_map_ if fs.enum is not None else None
        return isinstance(value, list) and all(
            isinstance(i, str) and (i in allowed if allowed is not None else 1 <= len(i) <= 200) for i in value
        )
    return False


def plainly_valid(spec: EntitySpec, kind: str, values: Mapping[str, Any], allow_sealed: bool,
                  keep_unknown: bool) -> bool:
    """A fast check of create/set values in plain Python, from the same FieldSpec table.

    It answers True only for values marshmallow would accept (a property test holds it
    to that); anything else goes to marshmallow, which decides and words the errors.
    """
    fmap = spec.field_map
    for name, value in values.items():
        fs = fmap.get(name)
        if fs is None:
            if keep_unknown:
                continue
            return False
        if kind == OpKind.SET and (fs.create_only or fs.immutable or fs.kind == "set"):
            return False
        if fs.personal and allow_sealed and isinstance(value, str) and value.startswith(SEALED_PREFIX):
            continue
        if not _plain_ok(fs, value, fs.required):
            return False
    if kind == OpKind.CREATE:
        return all(f.name in values for f in spec.fields if f.required)
    return True


def _is_iso_with_offset(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > 40:
        return False
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def parse_op(data: Any, *, allow_sealed: bool = False) -> Op:
    """Validate a mapping from outside and return the Op, or raise OpInvalid."""
    if isinstance(data, Op):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise _bad("op.not_a_mapping", f"an op must be an object, got {type(data).__name__}", "op")
    missing = [k for k in OP_FIELDS if k not in data]
    if missing:
        raise _bad("op.missing_field", f"op lacks {', '.join(missing)}", missing[0], missing=missing)
    extra = sorted(set(data) - set(OP_FIELDS))
    if extra:
        raise _bad("op.unknown_op_field", f"op has unknown keys {extra}", str(extra[0])[:40], unknown=extra)
    op = Op(**{k: data[k] for k in OP_FIELDS})
    check_op(op, allow_sealed=allow_sealed)
    return op


def check_op(op: Op, *, allow_sealed: bool = False) -> None:
    """Raise OpInvalid if ``op`` is not a well-formed op of this schema."""
    where = f"op {str(op.op_id)[:40]!r}"
    for name in ("op_id", "entity_id", "case_id"):
        value = getattr(op, name)
        if not isinstance(value, str) or not HEX32.fullmatch(value):
            raise _bad("op.bad_id", f"{where}: {name} must be 32 lowercase hex", name)
    if not isinstance(op.stamp, str) or not STAMP_RE.fullmatch(op.stamp):
        raise _bad("op.bad_stamp", f"{where}: unparseable stamp", "stamp", stamp=str(op.stamp)[:60])
    if not isinstance(op.device, str) or not NODE_RE.fullmatch(op.device):
        raise _bad("op.bad_id", f"{where}: device must be 16 chars of [0-9a-z]", "device")
    if op.stamp[25:] != op.device:
        raise _bad("op.device_mismatch", f"{where}: the stamp's node is not the device", "device")
    if not isinstance(op.author, str) or not 0 < len(op.author) <= 64:
        raise _bad("op.bad_author", f"{where}: author must be 1-64 characters", "author")
    if not _is_iso_with_offset(op.occurred_at):
        raise _bad("op.bad_time", f"{where}: occurred_at must be ISO 8601 with an offset", "occurred_at")
    version = op.schema_version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _bad("op.bad_version", f"{where}: schema_version must be a positive integer", "schema_version")
    spec = ENTITIES.get(op.entity) if isinstance(op.entity, str) else None
    if spec is None:
        raise _bad("op.unknown_entity", f"{where}: unknown entity {str(op.entity)[:40]!r}", "entity")
    if not isinstance(op.values, Mapping) or not isinstance(op.base, Mapping):
        raise _bad("op.wrong_type", f"{where}: values and base must be objects", "values")
    if (op.entity == "case") != (op.case_id == op.entity_id):
        raise _bad(
            "op.bad_case_id",
            f"{where}: case_id must equal entity_id for a case and differ for anything else",
            "case_id",
        )
    keep_unknown = version > SCHEMA_VERSION
    kind = op.kind
    if kind in (OpKind.CREATE, OpKind.SET):
        if kind == OpKind.SET and not op.values:
            raise _bad("op.missing_value", f"{where}: a set op must set at least one field", "values")
        if kind == OpKind.SET:
            for name in op.values:
                fs = spec.field_map.get(name)
                if fs is not None and (fs.create_only or fs.immutable or fs.kind == "set"):
                    raise _bad(
                        "op.not_settable",
                        f"{where}: {name} cannot be set (use a transition or add/remove)",
                        f"values.{name}",
                    )
        if not plainly_valid(spec, kind, op.values, allow_sealed, keep_unknown):
            _run(values_schema(op.entity, kind, allow_sealed, keep_unknown), op.values, "values", where)
        if kind == OpKind.SET:
            _check_base(op, where, set(op.values))
        elif op.base:
            raise _bad("op.bad_base", f"{where}: a create op has no base", "base")
        if op.entity == "mediation" and kind == OpKind.CREATE:
            _check_mediation(op, where)
    elif kind == OpKind.TRANSITION:
        if op.entity != "case":
            raise _bad("op.kind_not_for_entity", f"{where}: only a case takes transitions", "kind")
        action = op.values.get("action")
        if not isinstance(action, str) or action not in lifecycle.TRANSITIONS:
            raise _bad(
                "op.unknown_action",
                f"{where}: the state machine does not know action {str(action)[:40]!r}",
                "values.action",
            )
        _run(TRANSITION_SCHEMA, op.values, "values", where)
        if action in lifecycle.NEEDS_NODE and not op.values.get("to_node"):
            raise _bad("op.missing_value", f"{where}: {action} needs to_node", "values.to_node")
        if action in lifecycle.NEEDS_DECISION and not op.values.get("decision"):
            raise _bad(
                "op.missing_value", f"{where}: {action} needs a decision", "values.decision"
            )
        if op.base:
            raise _bad("op.bad_base", f"{where}: a transition has no base", "base")
    elif kind == OpKind.VOID:
        _run(VOID_SCHEMA, op.values, "values", where)
    elif kind == OpKind.RESOLVE:
        _run(RESOLVE_SCHEMA, op.values, "values", where)
        resolved_field = op.values.get("field")
        if resolved_field is not None:
            name = str(resolved_field)
            fs = spec.field_map.get(name)
            if fs is None or fs.create_only or fs.immutable or fs.kind == "set":
                raise _bad(
                    "op.unknown_field", f"{where}: cannot resolve field {name!r}", "values.field"
                )
            if "value" not in op.values:
                raise _bad("op.missing_value", f"{where}: resolve with a field needs a value", "values.value")
            _run(
                values_schema(op.entity, OpKind.SET, allow_sealed, keep_unknown),
                {name: op.values["value"]},
                "values.value",
                where,
            )
            _check_base(op, where, {name})
        elif "value" in op.values or op.base:
            raise _bad("op.bad_value", f"{where}: a value or base without a field", "values.field")
    elif kind in (OpKind.ADD, OpKind.REMOVE):
        _run(ADD_SCHEMA if kind == OpKind.ADD else REMOVE_SCHEMA, op.values, "values", where)
        fs = spec.field_map.get(op.values["field"])
        if fs is None or fs.kind != "set":
            raise _bad(
                "op.unknown_field",
                f"{where}: {op.values['field']!r} is not a set field of {op.entity}",
                "values.field",
            )
        if fs.enum is not None:
            bad = [i for i in op.values["items"] if i not in fs.enum._value2member_map_]
            if bad:
                raise _bad("op.bad_value", f"{where}: unknown items {bad}", "values.items")
        if op.base:
            raise _bad("op.bad_base", f"{where}: add/remove ops have no base", "base")
    elif keep_unknown and isinstance(kind, str) and 0 < len(kind) <= 32:
        return  # a newer release's kind: kept in the log, ignored by the fold
    else:
        raise _bad("op.unknown_kind", f"{where}: unknown op kind {str(kind)[:40]!r}", "kind")


def _check_base(op: Op, where: str, fields_written: set[str]) -> None:
    if set(op.base) != fields_written:
        raise _bad(
            "op.bad_base",
            f"{where}: base must name exactly the fields written",
            "base",
            expected=sorted(fields_written),
            got=sorted(map(str, op.base)),
        )
    for name, stamp in op.base.items():
        if stamp is not None and not (isinstance(stamp, str) and STAMP_RE.fullmatch(stamp)):
            raise _bad("op.bad_stamp", f"{where}: base.{name} is not a stamp", f"base.{name}")


def _check_mediation(op: Op, where: str) -> None:
    v = op.values
    if v.get("outcome") == "agreement" and not v.get("agreement_form"):
        raise _bad(
            "op.missing_value",
            f"{where}: an agreement must say whether it is written or oral",
            "values.agreement_form",
        )


def partition_ops(
    items: Iterable[Any], *, allow_sealed: bool = False
) -> tuple[list[Op], list[tuple[int, OpInvalid]]]:
    """Validate each item; return the good ops and (index, error) for each bad one."""
    good: list[Op] = []
    bad: list[tuple[int, OpInvalid]] = []
    for i, item in enumerate(items):
        try:
            good.append(parse_op(item, allow_sealed=allow_sealed))
        except OpInvalid as exc:
            bad.append((i, exc))
    return good, bad


def parse_ops(items: Iterable[Any], *, allow_sealed: bool = False) -> list[Op]:
    """Validate all; raise OpsRejected naming every bad one, or return the ops."""
    good, bad = partition_ops(items, allow_sealed=allow_sealed)
    if bad:
        raise OpsRejected([e for _, e in bad], indexes=[i for i, _ in bad])
    return good


__all__ = [
    "EntitySpec",
    "parse_op",
    "parse_ops",
    "partition_ops",
    "check_op",
    "values_schema",
    "SEALED_PREFIX",
]

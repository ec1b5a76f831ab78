"""Masking of personal identifiers on screen (个人信息保护法; DOMAIN.md "Confidentiality").

``3301021990010112X4`` -> ``3301**********12X4``; ``13812345678`` -> ``138****5678``;
names keep their first character: ``张三丰`` -> ``张**``.
"""

from __future__ import annotations


def mask_id(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_name(value: str | None) -> str | None:
    if not value:
        return value
    return value[0] + "*" * max(1, len(value) - 1)


MASKERS = {"id_number": mask_id, "phone": mask_phone}

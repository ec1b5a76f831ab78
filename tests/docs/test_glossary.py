"""The glossary names every enum value with its Chinese label (docs stay true)."""

from __future__ import annotations

import inspect
from pathlib import Path

from schema import enums
from schema.enums import LabeledEnum

GLOSSARY = Path(__file__).resolve().parents[2] / "docs" / "glossary.md"


def test_every_enum_value_and_chinese_label_is_in_the_glossary() -> None:
    text = GLOSSARY.read_text(encoding="utf-8")
    missing = [
        f"{cls.__name__}.{m.name}"
        for _, cls in inspect.getmembers(enums, inspect.isclass)
        if issubclass(cls, LabeledEnum) and cls is not LabeledEnum
        for m in cls
        if f"| `{m.value}` | {m.zh} |" not in text
    ]
    assert missing == []

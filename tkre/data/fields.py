"""Type checks for one field of one input record, each failing with a DataError that names the file,
the record and the field (instead of a record that is silently wrong, e.g. a sentence string split
into characters, or a pyarrow type error later on).

Hand-written rather than a pydantic model per format: the formats differ in how they name records
(line numbers, ids) and fields (`h.pos`), and these few checks keep that naming in one place.
"""

from __future__ import annotations

from typing import Any

from tkre.errors import DataError


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def is_int(value: Any) -> bool:
    """An integer, not a boolean (`True` is an `int` in Python but not an index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def want_str(value: Any, *, file: str, record: Any, field: str, optional: bool = False,
             empty: bool = False) -> str | None:
    """`value` if it is a string (non-empty unless `empty`); None allowed when `optional`."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DataError(f"expected a string{' or null' if optional else ''}, got {_kind(value)} {value!r}",
                        file=file, record=record, field=field)
    if not empty and not value.strip():
        raise DataError("empty string", file=file, record=record, field=field)
    return value


def want_int(value: Any, *, file: str, record: Any, field: str) -> int:
    if not is_int(value):
        raise DataError(f"expected an integer, got {_kind(value)} {value!r}", file=file, record=record,
                        field=field)
    return value


def want_id(value: Any, *, file: str, record: Any, field: str = "id") -> str:
    """Record ids: a non-empty string, or an integer (kept as its decimal string)."""
    if is_int(value):
        return str(value)
    return want_str(value, file=file, record=record, field=field)


def want_str_list(value: Any, *, file: str, record: Any, field: str) -> list[str]:
    """A non-empty list of non-empty strings (a token list). A plain string is refused: it would
    otherwise be taken character by character."""
    if isinstance(value, str):
        raise DataError("expected a list of token strings, got a string (give the sentence as its list of "
                        "tokens)", file=file, record=record, field=field)
    if not isinstance(value, list):
        raise DataError(f"expected a list of strings, got {_kind(value)}", file=file, record=record, field=field)
    if not value:
        raise DataError("empty token list", file=file, record=record, field=field)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise DataError(f"item {i} is {_kind(item)} {item!r}, expected a non-empty string", file=file,
                            record=record, field=field)
    return value


def want_dict(value: Any, *, file: str, record: Any, field: str | None = None) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {_kind(value)}", file=file, record=record, field=field)
    return value


def want_keys(d: dict, keys: tuple[str, ...], *, file: str, record: Any) -> None:
    for key in keys:
        if key not in d:
            raise DataError("missing field", file=file, record=record, field=key)

"""The `Dataset` every loader returns, and what the loaders share: reading JSON / JSONL files with
errors that name file and line, hashing the files read, and the label set of a dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from tkre.data.records import RelationExample, to_arrow
from tkre.errors import DataError, decode_utf8

SPLITS = ("train", "dev", "test")


@dataclass
class Dataset:
    name: str
    splits: dict[str, list[RelationExample]]
    relations: list[str]  # the label set, no-relation class first
    no_relation: str  # "Other" (SemEval) or "no_relation" (TACRED family)
    files: list[str] = field(default_factory=list)
    data_hash: str = ""  # sha256 over the bytes of every file read (dataset + patches)

    def split(self, name: str) -> list[RelationExample]:
        if name not in self.splits:
            raise DataError(f"no split '{name}' (have: {', '.join(self.splits)})")
        return self.splits[name]

    def arrow(self, split: str):
        """The split as an Arrow table with the fixed schema `tkre.data.ARROW_SCHEMA`."""
        return to_arrow(self.split(split))


def shipped_dir(name: str) -> Path:
    """Folder of data files shipped inside the package (semeval, tacrev)."""
    return Path(str(resources.files("tkre.data") / "files" / name))


def hash_files(paths: Iterable[Path], conversion: str = "") -> str:
    """sha256 over the names and bytes of `paths`; `conversion` names a change in how the loader turns
    those bytes into records, so that artifacts derived under an older conversion are not reused."""
    h = hashlib.sha256(conversion.encode())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def read_text(path: Path) -> str:
    """A dataset file's text; a missing file or a non-UTF-8 byte is a DataError naming the file."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    return decode_utf8(path.read_bytes(), str(path))


def read_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise DataError("empty file: no records", file=str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid or truncated JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                        file=str(path)) from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; a bad line names its number."""
    out = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):  # not splitlines(): U+2028 is valid JSON
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid or truncated JSON ({e.msg})", file=str(path), record=f"line {lineno}") from None
    if not out:
        raise DataError("empty file: no records", file=str(path))
    return out


def label_set(labels: Iterable[str], *, sort: bool = True) -> tuple[list[str], str]:
    """(relations, no-relation class) for labels collected from data: the no-relation class first
    (`Other` if the data uses it, else `no_relation`; `NA` is already `no_relation`), then the others
    sorted (or in their given order with `sort=False`)."""
    labels = list(dict.fromkeys(labels))
    no_rel = "Other" if "Other" in labels else "no_relation"
    rest = [r for r in labels if r != no_rel]
    return ([no_rel] if no_rel in labels else []) + (sorted(rest) if sort else rest), no_rel


def check_labels(examples: list[RelationExample], known: set[str], file: str, where: str = "") -> None:
    for ex in examples:
        if ex.relation not in known:
            raise DataError(f"unknown relation label {ex.relation!r}{where}", file=file, record=ex.id,
                            field="relation")

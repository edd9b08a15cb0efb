"""The `Dataset` every loader returns, and what the loaders share: reading JSON / JSONL files with
errors that name file and line, hashing the files read, the label set of a dataset, and the one
behaviour for labels that only dev/test carry.

Label sets: a dataset either declares its labels (SemEval's rel2id.json, a jsonl relations.json,
TACRED's 42) or takes them from its train split. It may have no no-relation class at all (every
sentence expresses one of the relations, FewRel style): then `no_relation` is None and micro-F1
excludes nothing. Labels that dev/test carry but train does not are kept, said once in a warning,
listed in `eval_only` (label -> dev+test examples) and scored as the model's inevitable misses:
nothing in training shows them (with a declared label set the model has a class for them that no
example trains; otherwise it has no class for them at all).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from tkre.data.records import RelationExample, to_arrow
from tkre.errors import DataError, decode_utf8

logger = logging.getLogger("tkre.data")

SPLITS = ("train", "dev", "test")

_warned_eval_only: set[tuple[str, tuple[str, ...]]] = set()


@dataclass
class Dataset:
    name: str
    splits: dict[str, list[RelationExample]]
    relations: list[str]  # the label set (the model's classes), no-relation class first when it has one
    no_relation: str | None  # "Other" (SemEval), "no_relation" (TACRED family), None: no such class
    files: list[str] = field(default_factory=list)
    data_hash: str = ""  # sha256 over the bytes of every file read (dataset + patches)
    eval_only: dict[str, int] = field(default_factory=dict)  # labels only dev/test carry -> examples

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


def no_relation_class(labels: Iterable[str]) -> str | None:
    """The no-relation class among `labels`: `Other` if the data uses it, else `no_relation` (`NA` is
    already `no_relation`), else None -- a label set without one."""
    present = set(labels)
    return next((name for name in ("Other", "no_relation") if name in present), None)


def label_set(labels: Iterable[str], *, sort: bool = True, no_relation: str | None = None
              ) -> tuple[list[str], str | None]:
    """(relations, no-relation class) for labels collected from data: the no-relation class first
    (`no_relation`, else the one `no_relation_class` finds among `labels`; None when there is none),
    then the others sorted (or in their given order with `sort=False`)."""
    labels = list(dict.fromkeys(labels))
    no_rel = no_relation or no_relation_class(labels)
    rest = [r for r in labels if r != no_rel]
    return ([no_rel] if no_rel in labels else []) + (sorted(rest) if sort else rest), no_rel


def eval_only_labels(splits: dict[str, list[RelationExample]]) -> dict[str, int]:
    """Labels that dev/test carry but train does not -> their number of dev + test examples."""
    train = {ex.relation for ex in splits.get("train", [])}
    counts: dict[str, int] = {}
    for split in SPLITS[1:]:
        for ex in splits.get(split, []):
            if ex.relation not in train:
                counts[ex.relation] = counts.get(ex.relation, 0) + 1
    return dict(sorted(counts.items()))


def with_eval_only(ds: Dataset, where: str | Path) -> Dataset:
    """`ds` with `eval_only` filled in; warns once per process per (data folder, labels)."""
    ds.eval_only = eval_only_labels(ds.splits)
    key = (f"{ds.name}:{Path(where).resolve()}", tuple(ds.eval_only))
    if ds.eval_only and key not in _warned_eval_only:
        _warned_eval_only.add(key)
        logger.warning("%s: %s: %d label(s) only dev/test carry, with no train example: %s; kept and scored "
                       "as the model's inevitable misses", ds.name, where, len(ds.eval_only),
                       ", ".join(f"{r} ({n})" for r, n in ds.eval_only.items()))
    return ds


def check_labels(examples: list[RelationExample], known: set[str], file: str, where: str = "") -> None:
    for ex in examples:
        if ex.relation not in known:
            raise DataError(f"unknown relation label {ex.relation!r}{where}", file=file, record=ex.id,
                            field="relation")

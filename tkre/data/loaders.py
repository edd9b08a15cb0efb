"""Dataset loaders, registered by name: semeval (shipped), tacred, tacrev, retacred, jsonl.

Every loader returns a `Dataset` of `RelationExample`s (spans end-exclusive) split into
train/dev/test, with the label set, the no-relation class (None when the labels have none), the
labels only dev/test carry (kept and warned about once: `tkre/data/dataset.py`) and a hash of the
files read.
Bad input raises `DataError` naming the file, the record (line number or id) and the field;
every field of every format is type-checked (`tkre/data/fields.py`). The TACRED family lives in
`tkre/data/tacred.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tkre.data.dataset import (SPLITS, Dataset, check_labels, hash_files, label_set, no_relation_class, read_json,
                               read_jsonl, shipped_dir, with_eval_only)
from tkre.data.fields import is_int, want_dict, want_keys, want_str, want_str_list
from tkre.data.records import RelationExample, canonical_relation, checked, example_from_generic
from tkre.data.tacred import TACRED_RELATIONS, load_retacred, load_tacred, load_tacrev
from tkre.errors import DataError

__all__ = ["LOADERS", "SPLITS", "TACRED_RELATIONS", "Dataset", "load_dataset", "load_from_config",
           "load_jsonl", "load_jsonl_split", "load_semeval", "read_jsonl", "shipped_dir"]


# ---------------------------------------------------------------- SemEval (KnowPrompt JSONL)

def _semeval_record(d: Any, *, file: str, lineno: int, split: str) -> RelationExample:
    record = f"line {lineno}"
    want_dict(d, file=file, record=record)
    want_keys(d, ("token", "h", "t", "relation"), file=file, record=record)
    tokens = want_str_list(d["token"], file=file, record=record, field="token")
    spans = []
    for role in ("h", "t"):
        want_dict(d[role], file=file, record=record, field=role)
        pos = d[role].get("pos")
        if not (isinstance(pos, list) and len(pos) == 2 and all(is_int(p) for p in pos)):
            raise DataError("expected pos = [start, end) (two integers)", file=file, record=record,
                            field=f"{role}.pos")
        spans.append(pos)
    ex = RelationExample(
        id=f"semeval-{split}-{lineno:05d}", tokens=tuple(tokens),
        subj_start=spans[0][0], subj_end=spans[0][1], obj_start=spans[1][0], obj_end=spans[1][1],
        relation=canonical_relation(want_str(d["relation"], file=file, record=record, field="relation")),
    )
    return checked(ex, file=file, record=record)


def _read_rel2id(path: Path) -> list[str]:
    rel2id = read_json(path)
    want_dict(rel2id, file=str(path), record=None)
    for label, i in rel2id.items():
        if not is_int(i):
            raise DataError(f"expected an integer label id, got {i!r}", file=str(path), record=label)
    return sorted(rel2id, key=rel2id.get)


def load_semeval(path: str | Path | None = None, **_: Any) -> Dataset:
    root = Path(path) if path else shipped_dir("semeval")
    rel2id_file = root / "rel2id.json"
    relations = _read_rel2id(rel2id_file)
    files = {"train": root / "train.txt", "dev": root / "val.txt", "test": root / "test.txt"}
    splits = {}
    for split, file in files.items():
        splits[split] = [_semeval_record(d, file=str(file), lineno=n, split=split) for n, d in read_jsonl(file)]
        check_labels(splits[split], set(relations), str(file))
    ds = Dataset("semeval", splits, relations, no_relation_class(relations),
                 [str(p) for p in [rel2id_file, *files.values()]], hash_files([rel2id_file, *files.values()]))
    return with_eval_only(ds, root)


# ---------------------------------------------------------------- generic JSONL

def load_jsonl_split(path: str | Path) -> list[RelationExample]:
    path = Path(path)
    return [example_from_generic(d, file=str(path), record=f"line {n}") for n, d in read_jsonl(path)]


def _read_relations(path: Path) -> list[str]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of relation labels", file=str(path))
    return [canonical_relation(want_str(r, file=str(path), record=f"#{i}", field="relation"))
            for i, r in enumerate(data)]


def load_jsonl(path: str | Path | None = None, **_: Any) -> Dataset:
    """Directory with train.jsonl, dev.jsonl, test.jsonl and optionally relations.json (a label list,
    then every split's labels must be in it); without it the label set is the train split's labels."""
    if not path:
        raise DataError("the jsonl dataset needs its directory: give --path")
    root = Path(path)
    if not root.is_dir():
        raise DataError("directory not found", file=str(root))
    files = [root / f"{s}.jsonl" for s in SPLITS]
    splits = {s: load_jsonl_split(f) for s, f in zip(SPLITS, files)}
    rel_file = root / "relations.json"
    if rel_file.is_file():
        relations, no_rel = label_set(_read_relations(rel_file), sort=False)
        files.append(rel_file)
        checks = list(zip(SPLITS, files))
    else:
        every = no_relation_class(ex.relation for split in splits.values() for ex in split)
        relations, no_rel = label_set((ex.relation for ex in splits["train"]), no_relation=every)
        checks = []
    for s, f in checks:
        check_labels(splits[s], set(relations), str(f), " (not in relations.json)")
    return with_eval_only(Dataset("jsonl", splits, relations, no_rel, [str(f) for f in files], hash_files(files)),
                          root)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "semeval": load_semeval,
    "tacred": load_tacred,
    "tacrev": load_tacrev,
    "retacred": load_retacred,
    "jsonl": load_jsonl,
}


def load_dataset(name: str, path: str | Path | None = None, patch_path: str | Path | None = None) -> Dataset:
    """Load a dataset by registered name."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(LOADERS)})")
    return LOADERS[name](path=path, patch_path=patch_path)


def load_from_config(cfg) -> Dataset:
    """Load the dataset a `DataConfig` names."""
    return load_dataset(cfg.dataset, cfg.path, cfg.patch_path)

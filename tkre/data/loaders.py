"""Dataset loaders, registered by name: semeval (shipped), tacred, tacrev, retacred, jsonl.

Every loader returns a `Dataset` of `RelationExample`s (spans end-exclusive) split into
train/dev/test, with the label set, the no-relation class and a hash of the files read.
Bad input raises `DataError` naming the file, the record (line number or id) and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

from tkre.data.records import (
    RelationExample,
    canonical_relation,
    checked,
    example_from_generic,
    to_arrow,
)
from tkre.errors import DataError

SPLITS = ("train", "dev", "test")

TACRED_RELATIONS = (
    "no_relation",
    "org:alternate_names", "org:city_of_headquarters", "org:country_of_headquarters", "org:dissolved",
    "org:founded", "org:founded_by", "org:member_of", "org:members", "org:number_of_employees/members",
    "org:parents", "org:political/religious_affiliation", "org:shareholders",
    "org:stateorprovince_of_headquarters", "org:subsidiaries", "org:top_members/employees", "org:website",
    "per:age", "per:alternate_names", "per:cause_of_death", "per:charges", "per:children",
    "per:cities_of_residence", "per:city_of_birth", "per:city_of_death", "per:countries_of_residence",
    "per:country_of_birth", "per:country_of_death", "per:date_of_birth", "per:date_of_death",
    "per:employee_of", "per:origin", "per:other_family", "per:parents", "per:religion",
    "per:schools_attended", "per:siblings", "per:spouse", "per:stateorprovince_of_birth",
    "per:stateorprovince_of_death", "per:stateorprovinces_of_residence", "per:title",
)


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

    def ray_dataset(self, split: str):
        """The split as a Ray Dataset (same schema), for Ray Data pipelines."""
        import ray.data

        return ray.data.from_arrow(self.arrow(split))


def shipped_dir(name: str) -> Path:
    """Folder of data files shipped inside the package (semeval, tacrev)."""
    return Path(str(resources.files("tkre.data") / "files" / name))


def _hash_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError("empty file: no records", file=str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid or truncated JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                        file=str(path)) from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; a bad line names its number."""
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid or truncated JSON ({e.msg})", file=str(path), record=f"line {lineno}") from None
    if not out:
        raise DataError("empty file: no records", file=str(path))
    return out


def _check_labels(examples: list[RelationExample], known: set[str], file: str) -> None:
    for ex in examples:
        if ex.relation not in known:
            raise DataError(f"unknown relation label {ex.relation!r}", file=file, record=ex.id, field="relation")


# ---------------------------------------------------------------- SemEval (KnowPrompt JSONL)

def _semeval_record(d: Any, *, file: str, lineno: int, split: str) -> RelationExample:
    record = f"line {lineno}"
    if not isinstance(d, dict):
        raise DataError("expected a JSON object", file=file, record=record)
    for key in ("token", "h", "t", "relation"):
        if key not in d:
            raise DataError("missing field", file=file, record=record, field=key)
    spans = []
    for role in ("h", "t"):
        pos = d[role].get("pos") if isinstance(d[role], dict) else None
        if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos)):
            raise DataError("expected pos = [start, end)", file=file, record=record, field=f"{role}.pos")
        spans.append(pos)
    ex = RelationExample(
        id=f"semeval-{split}-{lineno:05d}", tokens=tuple(d["token"]),
        subj_start=spans[0][0], subj_end=spans[0][1], obj_start=spans[1][0], obj_end=spans[1][1],
        relation=canonical_relation(d["relation"]),
    )
    return checked(ex, file=file, record=record)


def load_semeval(path: str | Path | None = None, **_: Any) -> Dataset:
    root = Path(path) if path else shipped_dir("semeval")
    rel2id_file = root / "rel2id.json"
    rel2id = _read_json(rel2id_file)
    relations = sorted(rel2id, key=rel2id.get)
    files = {"train": root / "train.txt", "dev": root / "val.txt", "test": root / "test.txt"}
    splits = {}
    for split, file in files.items():
        splits[split] = [_semeval_record(d, file=str(file), lineno=n, split=split) for n, d in read_jsonl(file)]
        _check_labels(splits[split], set(relations), str(file))
    return Dataset("semeval", splits, relations, "Other", [str(p) for p in [rel2id_file, *files.values()]],
                   _hash_files([rel2id_file, *files.values()]))


# ---------------------------------------------------------------- TACRED family

TACRED_FIELDS = ("id", "token", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type",
                 "relation")


def _tacred_file(root: Path, split: str) -> Path:
    for name in (f"{split}.json", f"{split}.jsonl"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {split}.json in the TACRED directory", file=str(root / f"{split}.json"))


def _tacred_split(path: Path) -> list[RelationExample]:
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    else:
        data = _read_json(path)
        if not isinstance(data, list):
            raise DataError("expected a JSON list of examples", file=str(path))
        if not data:
            raise DataError("empty dataset: no records", file=str(path))
        rows = list(enumerate(data))
    out = []
    for i, d in rows:
        record = d.get("id", f"#{i}") if isinstance(d, dict) else f"#{i}"
        if not isinstance(d, dict):
            raise DataError("expected a JSON object", file=str(path), record=record)
        for key in TACRED_FIELDS:
            if key not in d:
                raise DataError("missing field", file=str(path), record=record, field=key)
        for key in ("subj_start", "subj_end", "obj_start", "obj_end"):
            if not isinstance(d[key], int):
                raise DataError("expected an integer token index", file=str(path), record=record, field=key)
        n = len(d["token"])
        for role in ("subj", "obj"):  # official ends are INCLUSIVE
            if not (0 <= d[f"{role}_start"] <= d[f"{role}_end"] < n):
                raise DataError(f"span [{d[f'{role}_start']}, {d[f'{role}_end']}] (inclusive) outside the "
                                f"{n} tokens", file=str(path), record=record, field=f"{role}_end")
        ex = RelationExample(
            id=str(d["id"]), tokens=tuple(d["token"]),
            subj_start=d["subj_start"], subj_end=d["subj_end"] + 1,
            obj_start=d["obj_start"], obj_end=d["obj_end"] + 1,
            relation=canonical_relation(d["relation"]), subj_type=d["subj_type"], obj_type=d["obj_type"],
        )
        out.append(checked(ex, file=str(path), record=record))
    return out


def _load_tacred_files(path: str | Path | None) -> tuple[dict[str, list[RelationExample]], list[Path]]:
    if not path:
        raise DataError("the TACRED family is licensed (LDC) and not shipped: give its directory with --path")
    root = Path(path)
    if not root.is_dir():
        raise DataError("directory not found", file=str(root))
    files = [_tacred_file(root, s) for s in SPLITS]
    return {s: _tacred_split(f) for s, f in zip(SPLITS, files)}, files


def load_tacred(path: str | Path | None = None, **_: Any) -> Dataset:
    splits, files = _load_tacred_files(path)
    for s, f in zip(SPLITS, files):
        _check_labels(splits[s], set(TACRED_RELATIONS), str(f))
    return Dataset("tacred", splits, list(TACRED_RELATIONS), "no_relation", [str(f) for f in files],
                   _hash_files(files))


def load_tacrev(path: str | Path | None = None, patch_path: str | Path | None = None, **_: Any) -> Dataset:
    """TACRED with the TACREV relabelling of dev and test applied by example id."""
    base = load_tacred(path)
    patch_root = Path(patch_path) if patch_path else shipped_dir("tacrev")
    patch_files = []
    for split in ("dev", "test"):
        pfile = patch_root / f"{split}_patch.json"
        patch = _read_json(pfile)
        if not isinstance(patch, list):
            raise DataError("expected a JSON list of {id, relation}", file=str(pfile))
        by_id = {ex.id: i for i, ex in enumerate(base.splits[split])}
        examples = list(base.splits[split])
        for n, item in enumerate(patch):
            if not isinstance(item, dict) or "id" not in item or "relation" not in item:
                raise DataError("expected {id, relation}", file=str(pfile), record=f"#{n}")
            rel = canonical_relation(item["relation"])
            if rel not in TACRED_RELATIONS:
                raise DataError(f"unknown relation label {rel!r}", file=str(pfile), record=item["id"], field="relation")
            if item["id"] not in by_id:
                raise DataError(f"patch id not found in TACRED {split}", file=str(pfile), record=item["id"], field="id")
            i = by_id[item["id"]]
            examples[i] = _replace_relation(examples[i], rel)
        base.splits[split] = examples
        patch_files.append(pfile)
    files = [Path(f) for f in base.files] + patch_files
    return Dataset("tacrev", base.splits, base.relations, "no_relation", [str(f) for f in files], _hash_files(files))


def _replace_relation(ex: RelationExample, relation: str) -> RelationExample:
    return replace(ex, relation=relation)


def _retacred_patch_file(root: Path, split: str) -> Path:
    for name in (f"{split}_id2label.json", f"{split}.json"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {split}_id2label.json in the Re-TACRED patch directory",
                    file=str(root / f"{split}_id2label.json"))


def load_retacred(path: str | Path | None = None, patch_path: str | Path | None = None, **_: Any) -> Dataset:
    """TACRED relabelled by the Re-TACRED patch ({id: label}); ids absent from the patch are dropped."""
    if not patch_path:
        raise DataError("Re-TACRED needs its patch directory ({train,dev,test}_id2label.json): give --patch")
    splits, files = _load_tacred_files(path)
    root = Path(patch_path)
    patch_files, labels = [], set()
    for split in SPLITS:
        pfile = _retacred_patch_file(root, split)
        patch = _read_json(pfile)
        if not isinstance(patch, dict):
            raise DataError("expected a JSON object {id: label}", file=str(pfile))
        labels.update(canonical_relation(v) for v in patch.values())
        splits[split] = [_replace_relation(ex, canonical_relation(patch[ex.id])) for ex in splits[split]
                         if ex.id in patch]
        if not splits[split]:
            raise DataError(f"no {split} example of the TACRED data is in the patch", file=str(pfile))
        patch_files.append(pfile)
    relations = ["no_relation"] + sorted(labels - {"no_relation"})
    all_files = files + patch_files
    return Dataset("retacred", splits, relations, "no_relation", [str(f) for f in all_files],
                   _hash_files(all_files))


# ---------------------------------------------------------------- generic JSONL

def load_jsonl_split(path: str | Path) -> list[RelationExample]:
    path = Path(path)
    return [example_from_generic(d, file=str(path), record=f"line {n}") for n, d in read_jsonl(path)]


def load_jsonl(path: str | Path | None = None, **_: Any) -> Dataset:
    """Directory with train.jsonl, dev.jsonl, test.jsonl (and optionally relations.json, a label list)."""
    if not path:
        raise DataError("the jsonl dataset needs its directory: give --path")
    root = Path(path)
    if not root.is_dir():
        raise DataError("directory not found", file=str(root))
    files = [root / f"{s}.jsonl" for s in SPLITS]
    splits = {s: load_jsonl_split(f) for s, f in zip(SPLITS, files)}
    rel_file = root / "relations.json"
    if rel_file.is_file():
        relations = [canonical_relation(r) for r in _read_json(rel_file)]
        files.append(rel_file)
        checks = list(zip(SPLITS, files))
    else:
        relations = sorted({ex.relation for ex in splits["train"]})
        checks = list(zip(SPLITS[1:], files[1:]))
    no_rel = "Other" if "Other" in relations else "no_relation"
    relations = ([no_rel] if no_rel in relations else []) + [r for r in relations if r != no_rel]
    for s, f in checks:
        _check_labels(splits[s], set(relations), str(f))
    return Dataset("jsonl", splits, relations, no_rel, [str(f) for f in files], _hash_files(files))


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

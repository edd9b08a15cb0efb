"""The TACRED family: `tacred` (the official JSON files), `tacrev` (TACREV's relabelling of dev/test)
and `retacred` (the Re-TACRED patch), all read through one record parser.

- End indices in the files are INCLUSIVE; records get tkre's end-exclusive spans.
- Penn Treebank escapes in the tokens (`-LRB-`, `` `` ``, ...) become the characters they stand for,
  token by token (spans unchanged), so prompts and TYP Marker inputs read as plain text, as in the
  TACRED pipelines of TYP Marker and the TKRE reference code.
- Label set: data whose train labels are all TACRED's 42 is TACRED and is checked against the 42
  (a label outside them in dev/test is an error). TACRED-format data with other labels (Re-TACRED's
  converted files, a user's own corpus) is loaded with its own label set, the train split's labels,
  and the loader says so in one log line; its dev/test labels that train lacks are kept (warned
  about once, `Dataset.eval_only`), and it may have no no-relation class.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tkre.data.dataset import (SPLITS, Dataset, check_labels, hash_files, label_set, no_relation_class, read_json,
                               read_jsonl, shipped_dir, with_eval_only)
from tkre.data.fields import want_dict, want_id, want_int, want_keys, want_str, want_str_list
from tkre.data.records import RelationExample, canonical_relation, checked
from tkre.errors import DataError

logger = logging.getLogger("tkre.data")

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

TACRED_FIELDS = ("id", "token", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type",
                 "relation")

#: Penn Treebank token escapes (matched case-insensitively) -> the text they stand for.
PTB_TOKENS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
              "``": '"', "''": '"', "`": "'"}
#: Names the token conversion in the data hash: artifacts made from unconverted tokens are not reused.
TOKEN_CONVERSION = "tacred-tokens:ptb-to-text"

_announced: set[tuple[str, tuple[str, ...]]] = set()


def ptb_to_text(token: str) -> str:
    """One TACRED token with its Penn Treebank escape (if any) replaced by plain text."""
    return PTB_TOKENS.get(token.upper(), token)


def tacred_record(d: Any, *, file: str, record: str) -> RelationExample:
    """One record of the TACRED JSON format -> RelationExample; every field type-checked."""
    want_dict(d, file=file, record=record)
    want_keys(d, TACRED_FIELDS, file=file, record=record)
    rid = want_id(d["id"], file=file, record=record)
    tokens = want_str_list(d["token"], file=file, record=rid, field="token")
    pos = {k: want_int(d[k], file=file, record=rid, field=k)
           for k in ("subj_start", "subj_end", "obj_start", "obj_end")}
    n = len(tokens)
    for role in ("subj", "obj"):  # official ends are INCLUSIVE
        if not (0 <= pos[f"{role}_start"] <= pos[f"{role}_end"] < n):
            raise DataError(f"span [{pos[f'{role}_start']}, {pos[f'{role}_end']}] (inclusive) outside the "
                            f"{n} tokens", file=file, record=rid, field=f"{role}_end")
    types = {k: want_str(d[k], file=file, record=rid, field=k, optional=True) for k in ("subj_type", "obj_type")}
    ex = RelationExample(
        id=rid, tokens=tuple(ptb_to_text(t) for t in tokens),
        subj_start=pos["subj_start"], subj_end=pos["subj_end"] + 1,
        obj_start=pos["obj_start"], obj_end=pos["obj_end"] + 1,
        relation=canonical_relation(want_str(d["relation"], file=file, record=rid, field="relation")),
        subj_type=types["subj_type"], obj_type=types["obj_type"],
    )
    return checked(ex, file=file, record=rid)


def _record_name(d: Any, fallback: str) -> str:
    rid = d.get("id") if isinstance(d, dict) else None
    return str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else fallback


def _tacred_split(path: Path) -> list[RelationExample]:
    if path.suffix == ".jsonl":
        rows = [(f"line {n}", d) for n, d in read_jsonl(path)]
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError("expected a JSON list of examples", file=str(path))
        if not data:
            raise DataError("empty dataset: no records", file=str(path))
        rows = [(f"#{i}", d) for i, d in enumerate(data)]
    return [tacred_record(d, file=str(path), record=_record_name(d, where)) for where, d in rows]


def _tacred_file(root: Path, split: str) -> Path:
    for name in (f"{split}.json", f"{split}.jsonl"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {split}.json in the TACRED directory", file=str(root / f"{split}.json"))


def _load_tacred_files(path: str | Path | None) -> tuple[dict[str, list[RelationExample]], list[Path]]:
    if not path:
        raise DataError("the TACRED family is licensed (LDC) and not shipped: give its directory with --path")
    root = Path(path)
    if not root.is_dir():
        raise DataError("directory not found", file=str(root))
    files = [_tacred_file(root, s) for s in SPLITS]
    return {s: _tacred_split(f) for s, f in zip(SPLITS, files)}, files


def tacred_label_set(splits: dict[str, list[RelationExample]], files: list[Path], name: str
                     ) -> tuple[list[str], str | None]:
    """(relations, no-relation class): TACRED's 42 when every train label is one of them (then every
    split is checked against the 42), else the train split's own labels, said in one log line; its
    no-relation class is the one any split uses, or None."""
    train = {ex.relation for ex in splits["train"]}
    if train <= set(TACRED_RELATIONS):
        for s, f in zip(SPLITS, files):
            check_labels(splits[s], set(TACRED_RELATIONS), str(f),
                         " (not one of TACRED's 42 labels, which the train split uses)")
        return list(TACRED_RELATIONS), "no_relation"
    relations, no_rel = label_set(train, no_relation=no_relation_class(
        ex.relation for split in splits.values() for ex in split))
    key = (str(files[0].parent.resolve()), tuple(relations))
    if key not in _announced:
        _announced.add(key)
        foreign = sorted(train - set(TACRED_RELATIONS))
        logger.info("%s: %s uses its own label set, not TACRED's 42: %d relations from %s (%d not TACRED's, "
                    "e.g. %s); no-relation class %s", name, files[0].parent, len(relations), files[0].name,
                    len(foreign), ", ".join(foreign[:3]), repr(no_rel) if no_rel else "none (micro-F1 over all)")
    return relations, no_rel


def _load_tacred(path: str | Path | None, name: str) -> Dataset:
    splits, files = _load_tacred_files(path)
    relations, no_rel = tacred_label_set(splits, files, name)
    return Dataset(name, splits, relations, no_rel, [str(f) for f in files], hash_files(files, TOKEN_CONVERSION))


def _finished(ds: Dataset) -> Dataset:
    return with_eval_only(ds, Path(ds.files[0]).parent)


def load_tacred(path: str | Path | None = None, **_: Any) -> Dataset:
    return _finished(_load_tacred(path, "tacred"))


def load_tacrev(path: str | Path | None = None, patch_path: str | Path | None = None, **_: Any) -> Dataset:
    """TACRED with the TACREV relabelling of dev and test applied by example id."""
    base = _load_tacred(path, "tacrev")
    patch_root = Path(patch_path) if patch_path else shipped_dir("tacrev")
    patch_files = []
    eval_only = {ex.relation for split in ("dev", "test") for ex in base.splits[split]} - set(base.relations)
    for split in ("dev", "test"):
        pfile = patch_root / f"{split}_patch.json"
        patch = read_json(pfile)
        if not isinstance(patch, list):
            raise DataError("expected a JSON list of {id, relation}", file=str(pfile))
        by_id = {ex.id: i for i, ex in enumerate(base.splits[split])}
        examples = list(base.splits[split])
        for n, item in enumerate(patch):
            want_dict(item, file=str(pfile), record=f"#{n}")
            want_keys(item, ("id", "relation"), file=str(pfile), record=f"#{n}")
            pid = want_id(item["id"], file=str(pfile), record=f"#{n}")
            rel = canonical_relation(want_str(item["relation"], file=str(pfile), record=pid, field="relation"))
            if rel not in base.relations and rel not in eval_only:
                raise DataError(f"unknown relation label {rel!r}", file=str(pfile), record=pid, field="relation")
            if pid not in by_id:
                raise DataError(f"patch id not found in TACRED {split}", file=str(pfile), record=pid, field="id")
            examples[by_id[pid]] = replace(examples[by_id[pid]], relation=rel)
        base.splits[split] = examples
        patch_files.append(pfile)
    files = [Path(f) for f in base.files] + patch_files
    return _finished(Dataset("tacrev", base.splits, base.relations, base.no_relation, [str(f) for f in files],
                             hash_files(files, TOKEN_CONVERSION)))


def _retacred_patch_file(root: Path, split: str) -> Path:
    for name in (f"{split}_id2label.json", f"{split}.json"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {split}_id2label.json in the Re-TACRED patch directory",
                    file=str(root / f"{split}_id2label.json"))


def load_retacred(path: str | Path | None = None, patch_path: str | Path | None = None, **_: Any) -> Dataset:
    """TACRED relabelled by the Re-TACRED patch ({id: label}); ids absent from the patch are dropped.
    The label set is the patch's labels."""
    if not patch_path:
        raise DataError("Re-TACRED needs its patch directory ({train,dev,test}_id2label.json): give --patch")
    splits, files = _load_tacred_files(path)
    root = Path(patch_path)
    patch_files, labels = [], set()
    for split in SPLITS:
        pfile = _retacred_patch_file(root, split)
        patch = read_json(pfile)
        if not isinstance(patch, dict):
            raise DataError("expected a JSON object {id: label}", file=str(pfile))
        patch = {k: canonical_relation(want_str(v, file=str(pfile), record=k, field="label"))
                 for k, v in patch.items()}
        labels.update(patch.values())
        splits[split] = [replace(ex, relation=patch[ex.id]) for ex in splits[split] if ex.id in patch]
        if not splits[split]:
            raise DataError(f"no {split} example of the TACRED data is in the patch", file=str(pfile))
        patch_files.append(pfile)
    relations, no_rel = label_set(labels)
    all_files = files + patch_files
    return _finished(Dataset("retacred", splits, relations, no_rel, [str(f) for f in all_files],
                             hash_files(all_files, TOKEN_CONVERSION)))

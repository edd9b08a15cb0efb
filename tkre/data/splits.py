"""Writing splits and derived schemas to disk (atomically, byte-identical for equal inputs)."""

from __future__ import annotations

import json
from pathlib import Path

from tkre import __version__
from tkre.data.kshot import KShotSplit, relation_type_schema, sample_kshot
from tkre.data.dataset import Dataset
from tkre.data.records import RelationExample, example_to_generic
from tkre.io import atomic_write_json, atomic_write_text


def jsonl_text(examples: list[RelationExample]) -> str:
    return "".join(json.dumps(example_to_generic(ex), ensure_ascii=False, sort_keys=True) + "\n"
                   for ex in examples)


def write_jsonl(examples: list[RelationExample], path: str | Path) -> None:
    atomic_write_text(path, jsonl_text(examples))


def dataset_schema(ds: Dataset, examples: list[RelationExample]) -> dict:
    """Relation set of the dataset plus the type pairs per relation seen in `examples`."""
    return {"dataset": ds.name, "data_hash": ds.data_hash, "no_relation": ds.no_relation,
            "relations": ds.relations, "type_pairs": relation_type_schema(examples)}


def write_kshot(ds: Dataset, *, k: int, seed: int, protocol: str, out: str | Path) -> tuple[KShotSplit, list[Path]]:
    """Write the K-shot train split to `out` (generic JSONL) and `out`.schema.json; the genpt
    protocol's sampled dev set goes to `out` with suffix .dev.jsonl. Returns the split and paths."""
    out = Path(out)
    split = sample_kshot(ds, k, seed, protocol)
    written = [out]
    write_jsonl(split.train, out)
    if protocol == "genpt":
        dev_path = out.with_suffix(".dev.jsonl")
        write_jsonl(split.dev, dev_path)
        written.append(dev_path)
    schema_path = out.with_name(out.name + ".schema.json")
    schema = dataset_schema(ds, split.train) | {"k": k, "seed": seed, "protocol": protocol,
                                                "missing_relations": split.missing_relations,
                                                "tkre_version": __version__}
    atomic_write_json(schema_path, schema)
    written.append(schema_path)
    return split, written

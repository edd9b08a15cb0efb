"""Writing and reading generation outputs: explanation corpus, synthetic set, rejects.

The folder's manifest.json (with the stage's summary) is written by tkre.store.manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tkre.data.records import ARROW_SCHEMA, RelationExample, from_arrow, to_arrow
from tkre.errors import DataError
from tkre.io import atomic_path

EXPLANATIONS_FILE = "explanations.parquet"
SYNTHETIC_FILE = "synthetic.parquet"
REJECTS_FILE = "rejects.parquet"

EXPLANATION_SCHEMA = pa.schema([
    pa.field("relation", pa.string(), nullable=False),
    pa.field("subject", pa.string(), nullable=False),
    pa.field("object", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("explanation", pa.string(), nullable=False),
    pa.field("generator", pa.string(), nullable=False),
])

REJECT_SCHEMA = pa.schema([
    pa.field("relation", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
])


def write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: [r[f.name] for r in rows] for f in schema}, schema=schema)


def write_explanations(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    write_table(_rows_table(rows, EXPLANATION_SCHEMA), out_dir / EXPLANATIONS_FILE)
    return out_dir / EXPLANATIONS_FILE


def write_synthetic(examples: list[RelationExample], rejects: list[dict[str, Any]], out_dir: Path) -> None:
    write_table(to_arrow(examples), out_dir / SYNTHETIC_FILE)
    write_table(_rows_table(rejects, REJECT_SCHEMA), out_dir / REJECTS_FILE)


def _file(path: str | Path, name: str) -> Path:
    p = Path(path)
    p = p / name if p.is_dir() else p
    if not p.is_file():
        raise DataError("no such file (run `tkre generate` first)", file=str(p))
    return p


def read_explanations(out_dir_or_file: str | Path) -> list[dict[str, Any]]:
    """The explanation corpus as dicts (relation, subject, object, source_id, text, explanation, generator)."""
    path = _file(out_dir_or_file, EXPLANATIONS_FILE)
    table = pq.read_table(path)
    missing = [f.name for f in EXPLANATION_SCHEMA if f.name not in table.column_names]
    if missing:
        raise DataError("not an explanation corpus", file=str(path), field=missing[0])
    return table.select([f.name for f in EXPLANATION_SCHEMA]).to_pylist()


def read_synthetic(out_dir_or_file: str | Path) -> list[RelationExample]:
    """The synthetic set as data-layer records (every record re-checked)."""
    path = _file(out_dir_or_file, SYNTHETIC_FILE)
    table = pq.read_table(path)
    missing = [f.name for f in ARROW_SCHEMA if f.name not in table.column_names]
    if missing:
        raise DataError("not a synthetic set", file=str(path), field=missing[0])
    examples = from_arrow(table.select([f.name for f in ARROW_SCHEMA]))
    for i, ex in enumerate(examples):
        problems = ex.problems()
        if problems:
            raise DataError(problems[0][1], file=str(path), record=i, field=problems[0][0])
    return examples


def read_rejects(out_dir_or_file: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(_file(out_dir_or_file, REJECTS_FILE)).to_pylist()

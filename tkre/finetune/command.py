"""Dataset-level entry points behind `tkre finetune` and `tkre evaluate`: load the dataset, draw the
K-shot split, read an optional synthetic set, and call run_finetune / evaluate_checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tkre.config import DataConfig, FinetuneConfig
from tkre.data import load_from_config, load_jsonl_split, sample_kshot
from tkre.data.records import RelationExample
from tkre.errors import DataError

logger = logging.getLogger(__name__)


def read_examples(path: str | Path) -> list[RelationExample]:
    """Relation examples from a Parquet file (tkre.data.ARROW_SCHEMA), a generic JSONL file, or a
    folder holding synthetic.parquet (the generation stage's output)."""
    from tkre.generate.outputs import read_synthetic

    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        return read_synthetic(p)  # schema and every record checked; errors name file, record, field
    if not p.is_file():
        raise DataError("no such file", file=str(p))
    return load_jsonl_split(p)


def finetune_dataset(data: DataConfig, cfg: FinetuneConfig, *, out_dir: str | Path,
                     synthetic_path: str | None = None, run_name: str | None = None,
                     storage_path: str | None = None, callbacks: list | None = None) -> dict:
    """K-shot split of `data` (+ synthetic) -> run_finetune. Returns the metrics dict."""
    from tkre.finetune.run import run_finetune

    ds = load_from_config(data)
    split = sample_kshot(ds, data.k, data.seed, data.protocol)
    synthetic = read_examples(synthetic_path) if synthetic_path else None
    metrics = run_finetune(cfg, train=split.train, dev=split.dev, test=split.test, relations=ds.relations,
                           no_relation=ds.no_relation, synthetic=synthetic, out_dir=out_dir, run_name=run_name,
                           storage_path=storage_path, callbacks=callbacks)
    metrics["data"] = data.model_dump()
    from tkre.io import atomic_write_json

    atomic_write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def evaluate_dataset(checkpoint: str, data: DataConfig, *, split: str, out_dir: str | Path,
                     batch_size: int = 64, ray_data_min_examples: int | None = None, actors: int = 2) -> dict:
    """Evaluate a fine-tuned checkpoint on a split of the dataset (label sets must match)."""
    from tkre.finetune.evaluate import RAY_DATA_MIN_EXAMPLES, evaluate_checkpoint

    ds = load_from_config(data)
    examples = ds.split(split)
    return evaluate_checkpoint(checkpoint, examples, out_dir, split=split, relations=ds.relations,
                               batch_size=batch_size, actors=actors,
                               ray_data_min_examples=RAY_DATA_MIN_EXAMPLES if ray_data_min_examples is None
                               else ray_data_min_examples)

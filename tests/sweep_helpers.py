"""Shared by the pipeline/sweep tests: a small JSONL dataset cut from SemEval, sweep files, and waiting
for Ray to release what a finished job held (it does so asynchronously)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml


def write_mini_dataset(semeval, out: Path, relations=("Other", "Cause-Effect(e1,e2)", "Component-Whole(e2,e1)",
                                                      "Member-Collection(e2,e1)"),
                       n_train: int = 6, n_dev: int = 4, n_test: int = 6) -> Path:
    """A tiny real-text JSONL dataset (train/dev/test) with a few SemEval relations."""
    from tkre.data.splits import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        picked = []
        for rel in relations:
            picked += [ex for ex in semeval.split(split) if ex.relation == rel][:n]
        write_jsonl(picked, out / f"{split}.jsonl")
    return out


def golden_only_base(data_dir: Path, encoder: str, storage: Path, *, epochs: int = 2) -> dict:
    return {
        "data": {"dataset": "jsonl", "path": str(data_dir), "k": 3, "seed": 1},
        "stages": {"edkg": False, "scdg": False, "pretrain_stage1": False, "pretrain_stage2": False},
        "pretrain": {"encoder": encoder},  # the same encoder on both sides (a configuration error otherwise)
        "finetune": {"encoder": encoder, "epochs": epochs, "max_length": 48, "batch_size": 8, "lr": 1e-3,
                     # 0.9 CPU per Train worker + 0.05 per trial: two trials fit a 2-CPU machine
                     "resources": {"cpus_per_worker": 0.9}},
        "storage_path": str(storage),
    }


def write_sweep(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def wait_until(predicate, timeout_s: float = 60.0) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; its last value."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def read_events(sweep_dir: Path) -> list[dict]:
    """A local sweep directory's trial events (`events.jsonl`, one JSON object a line); [] before the first."""
    path = Path(sweep_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

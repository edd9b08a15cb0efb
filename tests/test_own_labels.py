"""Relation data as users bring it, end to end: a golden-only + TKRE sweep (every stage: K-shot
split, EDKG, SCDG, both pre-training stages, fine-tuning, test) to the report, on

- `fixtures/tacred_nonull`: TACRED format, a label set of its own with no no-relation class (so
  micro-F1 excludes nothing) and a label only test carries;
- `fixtures/jsonl_untyped`: generic JSONL, its own labels, untyped entities, `NA` as its
  no-relation class and a label only dev carries.

Tiny models (tests/tiny_models.py) on tiny data: this checks the plumbing, never quality.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sweep_helpers import golden_only_base, write_sweep
from tiny_models import make_tiny_llama

os.environ.setdefault("RAY_ADDRESS", "local")

FIX = Path(__file__).parent / "fixtures"
ON = {"stages.edkg": True, "stages.scdg": True, "stages.pretrain_stage1": True, "stages.pretrain_stage2": True}
DATA = {  # dataset -> (directory, the class micro-F1 leaves out, the label only dev/test carries)
    "tacred": (FIX / "tacred_nonull", None, "sibling_of"),
    "jsonl": (FIX / "jsonl_untyped", "no_relation", "twin_of"),
}


def _sweep(tmp_path: Path, encoder: str, llama: str) -> dict:
    base = golden_only_base(FIX / "jsonl_untyped", encoder, tmp_path / "store", epochs=1)
    base["data"]["k"] = 2
    base["edkg"] = {"generator": {"backend": "hf", "model": llama, "batch_size": 8, "sampling": {"temperature": 0.0}},
                    "max_new_tokens": 6}
    base["scdg"] = {"samples_per_relation": 1, "samples_per_prompt": 2, "prompt_examples": 2, "max_rounds": 1,
                    "max_new_tokens": 6}
    base["pretrain"] = {"encoder": encoder, "max_length": 40, "resources": {"cpus_per_worker": 0.9},
                        "stage1": {"epochs": 1, "batch_size": 16}, "stage2": {"epochs": 1, "batch_size": 16}}
    # one sweep for both datasets: one Tune start, one report that names each dataset's exclusion
    return {"name": "own-labels", "base": base, "variants": {"golden_only": {}, "tkre": ON},
            "grid": {"data": [{"dataset": d, "path": str(path)} for d, (path, _, _) in DATA.items()],
                     "variant": ["golden_only", "tkre"]},
            "resources": {"max_concurrent_trials": 2}, "min_free_gb": 0, "trial_timeout_s": 1800}


@pytest.mark.slow  # ~140 s; CI runs it after the README's command (.ci/run)
def test_golden_only_and_tkre_sweep_to_the_report(tmp_path, ray_local, tiny_encoder_dir):
    from tkre.report.tables import write_report
    from tkre.sweep.run import run_sweep

    llama = make_tiny_llama(tmp_path / "llama")
    out = run_sweep(write_sweep(tmp_path / "s.yaml", _sweep(tmp_path, tiny_encoder_dir, llama)))
    rows = pd.read_parquet(out.results_path)
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}, rows[["variant", "status", "error"]].to_string()
    for dataset, (_, excluded, eval_only) in DATA.items():
        by_variant = {r["variant"]: r for _, r in rows[rows["dataset"] == dataset].iterrows()}
        tkre, golden = by_variant["tkre"], by_variant["golden_only"]
        for stage in ("split", "edkg", "scdg", "stage1", "stage2", "finetune"):
            assert tkre[f"artifact.{stage}"], (dataset, stage)  # every stage ran on this data
        assert pd.isna(golden["artifact.edkg"]) and golden["artifact.finetune"]
        for row in (tkre, golden):
            assert 0 <= row["test_micro_f1"] <= 1 and row["relations"] == 4
            assert (None if pd.isna(row["metric_excluded_label"]) else row["metric_excluded_label"]) == excluded
        # the label only dev/test carries: kept and scored as the model's inevitable miss
        metrics = json.loads((tmp_path / "store" / "artifacts" / "finetune" / tkre["artifact.finetune"] /
                              "metrics.json").read_text())
        assert metrics["metric_excluded_label"] == excluded
        assert (eval_only in metrics["per_relation"]) == (dataset == "tacred")  # test-only vs dev-only
        if dataset == "tacred":
            assert metrics["per_relation"][eval_only]["recall"] == 0.0
            assert metrics["counts"]["test_unseen_relations"] == {eval_only: 1}
    report = write_report(out.sweep_dir).markdown_path.read_text()
    assert "(jsonl: `no_relation` excluded; tacred: no class excluded (no no-relation class))" in report
    assert "golden_only" in report and "tkre" in report

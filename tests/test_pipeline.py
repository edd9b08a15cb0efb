"""The full pipeline (split -> EDKG -> SCDG -> stage 1 -> stage 2 -> fine-tune -> test) with tiny models.

Slow (several Ray Train runs plus LLM generation): enable with --run-slow. The fast default tests in
test_sweep.py cover the same run_experiment/Tune code path with the generation and pre-training
stages switched off.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sweep_helpers import golden_only_base, write_mini_dataset, write_sweep  # noqa: E402
from tiny_models import make_tiny_llama  # noqa: E402

os.environ.setdefault("RAY_ADDRESS", "local")


def _full_base(tmp_path, semeval, encoder):
    data = write_mini_dataset(semeval, tmp_path / "data")
    base = golden_only_base(data, encoder, tmp_path / "store", epochs=2)
    base["stages"] = {"edkg": True, "scdg": True, "pretrain_stage1": True, "pretrain_stage2": True}
    base["edkg"] = {"generator": {"backend": "hf", "model": make_tiny_llama(tmp_path / "llama"), "batch_size": 4,
                                  "sampling": {"temperature": 0.0}}, "max_new_tokens": 8}
    base["scdg"] = {"samples_per_relation": 2, "samples_per_prompt": 4, "prompt_examples": 4, "max_rounds": 1,
                    "max_new_tokens": 8}
    base["pretrain"] = {"encoder": encoder, "max_length": 48, "resources": {"cpus_per_worker": 0.9},
                        "stage1": {"epochs": 1, "batch_size": 8}, "stage2": {"epochs": 1, "batch_size": 8}}
    return base


def _ran(row) -> dict[str, str]:
    """stage -> artifact key of the stages a row's run ran."""
    return {stage: key for stage, key in row.artifact.items() if key}


@pytest.mark.slow
def test_all_stages_then_ablations_reuse_upstream(tmp_path, ray_local, semeval, tiny_encoder_dir):
    from tkre.config import ExperimentConfig
    from tkre.pipeline import run_experiment
    from tkre.sweep.plan import planned_artifact_keys

    cfg = ExperimentConfig.model_validate(_full_base(tmp_path, semeval, tiny_encoder_dir))
    from tkre.generate import read_synthetic

    row = run_experiment(cfg, variant="tkre")
    store = tmp_path / "store" / "artifacts"
    for stage in ("split", "edkg", "scdg", "stage1", "stage2", "finetune"):
        assert row.artifact[stage] and row.reused[stage] is False, stage
        manifest = json.loads((store / stage / row.artifact[stage] / "manifest.json").read_text())
        assert manifest["stage"] == stage and manifest["key"] == row.artifact[stage] and "summary" in manifest
    assert 0 <= row.test_micro_f1 <= 1 and row.edkg_generator.startswith("hf:") and row.variant == "tkre"
    assert row.scdg_generator == row.edkg_generator and row.synthetic_asked == 2 * row.relations
    assert row.synthetic_kept == len(read_synthetic(store / "scdg" / row.artifact["scdg"]))
    # every stage's Train run folder went once its artifact was stored (the artifacts hold the models)
    assert [p.name for p in (tmp_path / "store" / "train").iterdir()] == []
    # w/o SCL: same generation and stage 1, new stage 2 and fine-tuning
    no_scl_cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
        update={"scl": cfg.pretrain.scl.model_copy(update={"lambda2": 0.0})})})
    no_scl = run_experiment(no_scl_cfg)
    assert all(no_scl.reused[s] for s in ("split", "edkg", "scdg", "stage1"))
    assert no_scl.artifact["stage2"] != row.artifact["stage2"] and no_scl.reused["stage2"] is False
    # every stage's stored key is the one `tkre sweep --plan` predicts (same config and data hash)
    assert _ran(row) == planned_artifact_keys(cfg, data_hash=row.data_hash)
    assert _ran(no_scl) == planned_artifact_keys(no_scl_cfg, data_hash=no_scl.data_hash)


@pytest.mark.slow
def test_search_sweep_shares_generation_artifact(tmp_path, ray_local, semeval, tiny_encoder_dir):
    """The issue's 6-trial search_pretrain-style sweep: 2 concurrent trials, Optuna + ASHA, one
    generation run shared by every trial."""
    from tkre.sweep.run import run_sweep

    sweep = {"name": "search6", "base": _full_base(tmp_path, semeval, tiny_encoder_dir),
             "search": {"space": {"pretrain.scl.tau": {"type": "loguniform", "low": 0.03, "high": 0.5},
                                  "pretrain.scl.lambda2": {"type": "uniform", "low": 0.0, "high": 2.0}},
                        "num_samples": 6, "asha": {"grace_period": 1}},
             "resources": {"max_concurrent_trials": 2}, "min_free_gb": 0}
    out = run_sweep(write_sweep(tmp_path / "s.yaml", sweep))
    rows = pd.read_parquet(out.results_path)
    assert len(rows) == 6 and out.concurrent_trials == 2
    finished = rows[rows["status"] == "ok"]
    assert finished["artifact.edkg"].nunique() == 1 and finished["artifact.stage1"].nunique() == 1
    assert (~finished["reused.edkg"].astype(bool)).sum() <= 1  # computed once, reused by the others


def test_scdg_only_row_counts_synthetic_data(tmp_path, ray_local, semeval, tiny_encoder_dir):
    """SCDG on, the rest off (fast): the row names the SCDG generator and counts the samples asked,
    kept (what the SCDG artifact holds) and used by fine-tuning; the folder has one manifest."""
    from tkre.config import ExperimentConfig
    from tkre.generate import read_synthetic
    from tkre.pipeline import run_experiment
    from tkre.sweep.plan import planned_artifact_keys

    base = _full_base(tmp_path, semeval, tiny_encoder_dir)
    base["stages"] = {"edkg": False, "scdg": True, "pretrain_stage1": False, "pretrain_stage2": False}
    base["finetune"]["epochs"] = 1
    cfg = ExperimentConfig.model_validate(base)
    row = run_experiment(cfg, variant="no_pretrain")
    # the keys it stored under are the ones `tkre sweep --plan` predicts (same config and data hash)
    assert _ran(row) == planned_artifact_keys(cfg, data_hash=row.data_hash) and set(_ran(row)) == {
        "split", "scdg", "finetune"}
    scdg_dir = tmp_path / "store" / "artifacts" / "scdg" / row.artifact["scdg"]
    manifest = json.loads((scdg_dir / "manifest.json").read_text())
    assert row.variant == "no_pretrain" and row.edkg_generator is None and row.masking is None
    assert row.scdg_generator == manifest["summary"]["generator"] and row.scdg_generator.startswith("hf:")
    assert row.relations == 4 and row.synthetic_asked == 2 * 4  # scdg.samples_per_relation = 2
    assert row.synthetic_kept == len(read_synthetic(scdg_dir)) == manifest["summary"]["counts"]["kept"]
    assert row.synthetic_used == row.synthetic_kept and row.artifact["stage1"] is None
    assert row.to_flat()["synthetic_kept"] == row.synthetic_kept  # a number in the table, never empty
    # the fine-tuning budget and the steps it took: 1 epoch over golden + synthetic, batch 8
    train_size = row.relations * base["data"]["k"] + row.synthetic_used
    assert row.finetune_budget == "1 epoch" and row.finetune_epochs_run == 1 and row.stopped_on_patience is False
    assert row.finetune_steps == row.best_step == -(-train_size // 8) and row.best_epoch == 0
    # the fine-tuning run's Train folder (epoch checkpoints with optimizer state) is gone once the
    # artifact holds the model; nothing else is left under train/
    ft_dir = tmp_path / "store" / "artifacts" / "finetune" / row.artifact["finetune"]
    assert (ft_dir / "checkpoint" / "config.json").is_file()
    assert not (tmp_path / "store" / "train" / f"finetune-{row.artifact['finetune']}").exists()
    assert not any((tmp_path / "store" / "train").glob("finetune-*"))

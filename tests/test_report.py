"""Reports from a results table: mean ± std over seeds, paper numbers side by side, plots, Markdown."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tkre.report import infer_variant, paper_number, results_table, write_report


def _cfg(**stages):
    s = {"edkg": True, "scdg": True, "pretrain_stage1": True, "pretrain_stage2": True, **stages}
    return json.dumps({"stages": s, "pretrain": {"masking": "mslm", "scl": {"lambda2": 1.0}}})


def _rows():
    rows = []
    for seed, (g, t) in enumerate([(0.60, 0.70), (0.64, 0.76)], start=1):
        for variant, f1, cfg in (("golden_only", g, _cfg(edkg=False, scdg=False, pretrain_stage1=False,
                                                              pretrain_stage2=False)), ("tkre", t, _cfg())):
            for spr in (8, 16):
                rows.append({"phase": "grid", "trial_id": f"{variant}{seed}{spr}", "status": "ok", "variant": variant,
                             "dataset": "semeval", "k": 8, "backbone": "typ_marker", "seed": seed,
                             "generator": "hf:embedded:smollm2" if spr == 8 else "openai:gpt-3.5",
                             "synthetic_asked": spr, "test_micro_f1": f1 + spr / 1000,
                             "dev_micro_f1": f1 - 0.05, "experiment_config": cfg, "error": None})
    rows.append({"phase": "grid", "trial_id": "bad", "status": "error", "variant": "tkre", "dataset": "semeval",
                 "k": 8, "error": "RuntimeError: boom", "experiment_config": _cfg()})
    for i, (tau, v) in enumerate([(0.05, 0.5), (0.1, 0.6), (0.3, 0.55), (0.2, 0.58)]):
        rows.append({"phase": "search-000", "trial_id": f"s{i}", "status": "ok", "dataset": "semeval", "k": 8,
                     "param.pretrain.scl.tau": tau, "param.finetune.lr": 1e-5 * (i + 1), "dev_micro_f1": v,
                     "test_micro_f1": 0.1, "experiment_config": _cfg()})
    return pd.DataFrame(rows)


def test_paper_numbers_and_variants():
    assert paper_number("semeval", 8, "typ_marker", "tkre") == 77.6
    assert paper_number("tacred", 32, "genpt", "tkre") == 43.2
    assert paper_number("semeval", 8, "typ_marker", "golden_only") == 70.9
    assert paper_number("tacred", 16, "typ_marker", "no_scl") == 35.9
    assert paper_number("retacred", 16, "typ_marker", "no_scl") is None
    assert paper_number("semeval", 4, "typ_marker", "tkre") is None
    assert infer_variant(_cfg(scdg=False)) == "no_scdg"
    assert infer_variant(_cfg(edkg=False, scdg=False, pretrain_stage1=False, pretrain_stage2=False)) == "golden_only"


def test_results_table_mean_std_over_seeds():
    df = _rows()
    df["variant_kind"] = df["experiment_config"].map(infer_variant)
    table = results_table(df)
    tk = table[(table["variant"] == "tkre") & (table["synthetic_asked"] == 8)].iloc[0]
    assert tk["seeds"] == 2 and tk["paper %"] == "77.6"
    # (70.8, 76.8) -> mean 73.8, sample std 4.2
    assert tk["test micro-F1 %"] == "73.8 ± 4.2"
    assert set(table["variant"]) == {"tkre", "golden_only"}  # search and failed trials left out


def test_write_report_markdown_and_plots(tmp_path):
    df = _rows()
    df.to_parquet(tmp_path / "results.parquet", index=False)
    plan = {"sweep": {"name": "demo", "search": {"metric": "dev_micro_f1", "mode": "max", "space": {
        "pretrain.scl.tau": {"type": "loguniform", "low": 0.03, "high": 0.5},
        "finetune.lr": {"type": "loguniform", "low": 1e-6, "high": 1e-3}}}}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    rep = write_report(tmp_path)
    md = rep.markdown_path.read_text()
    assert "| semeval | 8 | typ_marker | tkre |" in md and "77.6" in md and "70.9" in md
    assert "RuntimeError: boom" in md and "best dev_micro_f1 = 60.0%" in md
    names = {p.name for p in rep.plots}
    assert {"f1_vs_synthetic.png", "f1_per_generator.png", "optuna_history.png", "optuna_importance.png"} <= names
    for p in rep.plots:
        assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
        assert f"]({p.relative_to(tmp_path / 'report').as_posix()})" in md


def test_report_on_a_non_sweep_dir_is_a_clear_error(tmp_path):
    from tkre.errors import ConfigError

    with pytest.raises(ConfigError, match="no results.parquet"):
        write_report(tmp_path)

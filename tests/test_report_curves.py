"""Learning curves in the report: mean ± std over seeds per variant and epoch, from the rows' histories."""

import json

import pandas as pd
import pytest

from tkre.report.curves import curve_section, finetune_curves, pretrain_curves


def _row(variant, seed, dev, loss, pre=None):
    return {"dataset": "semeval", "k": 8, "backbone": "typ_marker", "variant": variant, "seed": seed,
            "epoch_history": json.dumps([{"epoch": e, "dev_micro_f1": d, "train_loss": l}
                                         for e, (d, l) in enumerate(zip(dev, loss))]),
            "pretrain_history": json.dumps(pre or {})}


def _rows():
    s1 = [{"epoch": 0, "train_loss": 6.0, "heldout_mslm_loss": 5.5}, {"epoch": 1, "train_loss": 5.0,
                                                                      "heldout_mslm_loss": 5.0}]
    return pd.DataFrame([
        _row("golden_only", 1, [0.2, 0.3, 0.4], [2.0, 1.5, 1.0]),
        _row("golden_only", 2, [0.4, 0.5], [2.2, 1.7]),  # stopped early: epoch 3 from one seed only
        _row("tkre", 1, [0.3, 0.5, 0.6], [1.9, 1.2, 0.9], {"stage1": s1, "stage2": s1[:1]}),
        _row("tkre", 2, [0.5, 0.5, 0.6], [2.1, 1.4, 1.1], {"stage1": s1}),
    ])


def test_finetune_curves_mean_std_and_count_per_epoch_one_based():
    c = finetune_curves(_rows()).set_index(["variant", "epoch", "metric"])
    g1 = c.loc[("golden_only", 1, "dev_micro_f1")]
    assert g1["mean"] == pytest.approx(0.3) and g1["std"] == pytest.approx(0.1414, abs=1e-3) and g1["n"] == 2
    g3 = c.loc[("golden_only", 3, "dev_micro_f1")]
    assert g3["mean"] == pytest.approx(0.4) and g3["n"] == 1 and g3["std"] == 0.0
    assert c.loc[("tkre", 2, "train_loss")]["mean"] == pytest.approx(1.3)


def test_pretrain_curves_per_stage():
    c = pretrain_curves(_rows()).set_index(["variant", "stage", "epoch", "metric"])
    assert c.loc[("tkre", "stage1", 2, "heldout_mslm_loss")]["n"] == 2
    assert c.loc[("tkre", "stage2", 1, "train_loss")]["n"] == 1
    assert "golden_only" not in set(c.reset_index()["variant"])  # no pre-training ran


def test_curve_section_writes_the_plots_and_a_last_epoch_table(tmp_path):
    lines, plots = curve_section(_rows(), tmp_path)
    assert {p.name for p in plots} == {"learning_curves.png", "pretraining_stage1_curves.png",
                                       "pretraining_stage2_curves.png"}
    assert all(p.stat().st_size > 1000 for p in plots)
    assert "| semeval K=8 typ_marker | tkre | 3 | 60.0 ± 0.0 | 2 |" in lines


def test_rows_without_histories_give_no_section(tmp_path):
    rows = _rows().assign(epoch_history="[]", pretrain_history="{}")
    assert curve_section(rows, tmp_path) == ([], [])


def test_step_evaluated_runs_are_keyed_by_optimizer_step(tmp_path):
    """finetune.eval_every_steps: two evaluations can fall in one epoch; points are keyed by step."""
    config = json.dumps({"finetune": {"eval_every_steps": 4}})
    hist = [{"epoch": 0, "global_step": 4, "dev_micro_f1": 0.2, "train_loss": 2.0},
            {"epoch": 0, "global_step": 8, "dev_micro_f1": 0.4, "train_loss": 1.0},
            {"epoch": 1, "global_step": 10, "dev_micro_f1": 0.5, "train_loss": 0.8}]
    rows = pd.DataFrame([{"dataset": "semeval", "k": 8, "backbone": "typ_marker", "variant": "tkre", "seed": s,
                          "epoch_history": json.dumps(hist), "experiment_config": config} for s in (1, 2)])
    c = finetune_curves(rows).set_index(["variant", "step", "metric"])
    assert sorted({s for _, s, _ in c.index}) == [4, 8, 10]
    assert c.loc[("tkre", 8, "dev_micro_f1")]["mean"] == pytest.approx(0.4)  # not averaged with step 4
    lines, plots = curve_section(rows, tmp_path)
    assert "| semeval K=8 typ_marker | tkre | 10 | 50.0 ± 0.0 | 2 |" in lines and plots

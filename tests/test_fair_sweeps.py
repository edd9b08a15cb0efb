"""Shipped sweeps compare fairly: the quickstart gives both arms the same optimizer steps and says one
seed is not an answer; Fig. 6 is TKRE (GenPT) with an extra-golden (oracle) curve, trained to convergence
with the encoder's recipe; Tables 2 and 3 state their budget. All planned without Ray."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import tkre.cluster.runtime
from tkre.cli import app
from tkre.sweep.config import experiment_for, grid_points, load_sweep, resolve_sweep_file


def _plan_json(name, monkeypatch) -> list[dict]:
    monkeypatch.setattr(tkre.cluster.runtime, "init_ray", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray")))
    r = CliRunner().invoke(app, ["sweep", name, "--plan", "--json"])
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines()]


def test_quickstart_plans_both_arms_with_the_same_steps(monkeypatch):
    rows = _plan_json("quickstart", monkeypatch)
    assert sorted(r["variant"] for r in rows) == ["golden_only", "tkre"]
    budgets = {r["variant"]: r["config"]["finetune"]["budget"] for r in rows}
    assert budgets["golden_only"] == budgets["tkre"] and budgets["tkre"]["mode"] == "steps"
    assert budgets["tkre"]["steps"] >= 90  # at least what golden-only took at the old 10 epochs
    text = CliRunner().invoke(app, ["sweep", "quickstart", "--plan"]).output
    assert text.count("110 steps") == 2, text


def test_quickstart_prints_each_arms_steps_and_that_one_seed_is_not_an_answer():
    from tkre.cli.sweeps import quickstart_lines

    rows = pd.DataFrame([{"variant": "tkre", "status": "ok", "finetune_steps": 110, "finetune_budget": "110 steps",
                          "stopped_on_patience": False},
                         {"variant": "golden_only", "status": "ok", "finetune_steps": 110.0,
                          "finetune_budget": "110 steps", "stopped_on_patience": False}])
    lines = quickstart_lines(rows)
    assert lines[:2] == ["fine-tuning golden_only: 110 optimizer steps (budget: 110 steps)",
                         "fine-tuning tkre: 110 optimizer steps (budget: 110 steps)"]
    assert lines[-1].startswith("One seed is not an answer") and "docs/studies.md" in lines[-1]


def test_fig6_is_tkre_genpt_with_an_oracle_curve_to_convergence(monkeypatch):
    sweep = load_sweep(resolve_sweep_file("synthetic_scale_fig6"))
    trials = [(p, experiment_for(sweep, p)) for p in grid_points(sweep)]
    curves: dict[str, set] = {}
    for p, c in trials:
        assert c.finetune.backbone == "genpt" and all((c.stages.edkg, c.stages.pretrain_stage1,
                                                        c.stages.pretrain_stage2)), p
        ft = c.finetune
        assert ft.recipe_note() is not None and ft.lr == 1e-4, "the MiniLM recipe applies (no lr/epochs/batch_size set)"
        assert ft.budget.mode == "convergence"
        source = c.scdg.source if c.stages.scdg else "none"
        curves.setdefault(source, set()).add(c.synthetic_asked_per_relation())
    assert curves == {"none": {0}, "llm": {1, 4, 8, 16, 32, 64}, "oracle": {1, 4, 8, 16, 32, 64}}
    rows = _plan_json("synthetic_scale_fig6", monkeypatch)
    assert {r["config"]["finetune"]["backbone"] for r in rows} == {"genpt"}
    oracle = [r for r in rows if r["config"]["scdg"]["source"] == "oracle"]
    assert len(oracle) == 6 * 3 and len({r["artifacts"]["edkg"] for r in rows if r["config"]["data"]["seed"] == 1}) == 1


@pytest.mark.parametrize("name", ["paper_table2", "ablation_table3"])
def test_paper_table_sweeps_state_their_budget(name):
    sweep = load_sweep(resolve_sweep_file(name))
    assert "budget" in sweep.base["finetune"]
    for p in grid_points(sweep)[:4]:
        assert experiment_for(sweep, p).finetune.budget.mode == "epochs"


def test_fig6_report_draws_both_curves_from_the_zero_point():
    from tkre.report.tables import synthetic_curves

    rows = []
    for seed in (1, 2):
        rows.append({"dataset": "semeval", "k": 8, "backbone": "genpt", "synthetic_asked": 0, "synthetic_kept": 0,
                     "relations": 18, "synthetic_source": None, "test_micro_f1": 0.3 + seed / 100})
        for source, f1 in (("llm", 0.32), ("oracle", 0.4)):
            for n in (4, 8):
                rows.append({"dataset": "semeval", "k": 8, "backbone": "genpt", "synthetic_asked": 18 * n,
                             "synthetic_kept": 18 * n // (2 if source == "llm" else 1), "relations": 18,
                             "synthetic_source": source, "test_micro_f1": f1 + n / 100})
    curves = synthetic_curves(pd.DataFrame(rows))
    assert set(curves) == {"semeval K=8 genpt: synthetic (generator)", "semeval K=8 genpt: extra golden (oracle)"}
    oracle = curves["semeval K=8 genpt: extra golden (oracle)"]
    assert list(oracle["x"]) == [0, 4, 8] and list(oracle["mean"]) == pytest.approx([0.315, 0.44, 0.48])
    assert list(curves["semeval K=8 genpt: synthetic (generator)"]["x"]) == [0, 2, 4]  # kept, not asked

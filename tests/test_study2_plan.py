"""Study 2's sweep (cpu_semeval_study2), planned without running: the first study's setting exactly, five
arms (golden-only, TKRE, TKRE with oracle samples, oracle samples without pre-training, TKRE with shuffled
labels) x splits 1-5 at one fair budget (200 optimizer steps for every arm); generation and stage 1 shared
per seed (and with the first study), and the report pairs within a budget mode, with the declared control
comparisons."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from tkre.sweep.config import load_sweep, resolve_sweep_file
from tkre.sweep.plan import plan_trials

ARMS = ["golden_only", "tkre", "tkre_oracle", "oracle_no_pretrain", "tkre_shuffled"]


def _planned(name):
    return plan_trials(load_sweep(resolve_sweep_file(name)))


def test_study2_plans_five_arms_at_equal_steps_on_the_first_studys_setting():
    sweep = load_sweep(resolve_sweep_file("cpu_semeval_study2"))
    assert sweep.base == load_sweep(resolve_sweep_file("cpu_semeval")).base  # every setting chosen on dev
    assert sweep.comparisons == [("tkre", "tkre_shuffled"), ("tkre_oracle", "oracle_no_pretrain")]
    trials = _planned("cpu_semeval_study2")
    by = {(t.variant, t.experiment.data.seed): t for t in trials}
    assert len(trials) == len(by) == 25
    assert set(by) == {(v, s) for v in ARMS for s in (1, 2, 3, 4, 5)}
    for (v, s), t in by.items():
        c = t.experiment
        # within a seed every arm fine-tunes the same way: 200 optimizer steps
        assert c.finetune == by[("golden_only", s)].experiment.finetune
        assert (c.finetune.budget.mode, c.finetune.budget.steps) == ("steps", 200)
        source = {"tkre_oracle": "oracle", "oracle_no_pretrain": "oracle", "tkre_shuffled": "shuffled"}.get(v, "llm")
        assert (c.scdg.source, c.stages.scdg) == (source, v != "golden_only")
        assert c.stages.pretrain_stage2 == (v in ("tkre", "tkre_oracle", "tkre_shuffled"))
    assert len({t.artifacts["finetune"] for t in trials}) == 25


def test_study2_shares_generation_and_stage1_per_seed_and_with_the_first_study():
    study = {(t.variant, t.experiment.data.seed): t.artifacts for t in _planned("cpu_semeval")}
    trials = _planned("cpu_semeval_study2")
    for seed in (1, 2, 3, 4, 5):
        arts = {t.variant: t.artifacts for t in trials if t.experiment.data.seed == seed}
        tkre, first = arts["tkre"], study[("tkre", seed)]
        assert {s: tkre[s] for s in ("split", "edkg", "scdg", "stage1", "stage2")} == \
            {s: first[s] for s in ("split", "edkg", "scdg", "stage1", "stage2")}  # reused from the first study
        assert arts["tkre_shuffled"]["generated"] == tkre["scdg"]  # shuffles the very samples
        assert arts["tkre_oracle"]["scdg"] == arts["oracle_no_pretrain"]["scdg"] != tkre["scdg"]
        for arm in ("tkre_oracle", "tkre_shuffled"):
            assert arts[arm]["stage1"] == tkre["stage1"] and arts[arm]["stage2"] != tkre["stage2"]
        assert arts["golden_only"]["finetune"] != study[("golden_only", seed)]["finetune"]  # 200 steps, not 10 epochs


def test_study2_plan_from_the_command_line(monkeypatch):
    import tkre.cluster.runtime
    from tkre.cli import app

    monkeypatch.setattr(tkre.cluster.runtime, "init_ray", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray")))
    r = CliRunner().invoke(app, ["sweep", "cpu_semeval_study2", "--plan", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 25 and {r["config"]["scdg"]["source"] for r in rows} == {"llm", "oracle", "shuffled"}


def test_report_pairs_within_a_budget_mode_and_makes_the_declared_comparisons():
    from tkre.report.paired import comparisons_table, declared_comparisons, paired_comparisons

    rows = []
    for seed in (1, 2, 3):
        for budget in ("convergence (patience 3, max 15 epochs)", "200 steps"):
            for variant, f1 in (("golden_only", 0.30), ("tkre", 0.34), ("tkre_shuffled", 0.31)):
                rows.append({"dataset": "semeval", "k": 8, "backbone": "typ_marker", "variant": variant,
                             "seed": seed, "test_micro_f1": f1 + seed / 1000 + (0.05 if budget == "200 steps" else 0),
                             "finetune_budget": budget, "finetune_steps": 200 if budget == "200 steps" else 150,
                             "stopped_on_patience": budget.startswith("convergence")})
    df = pd.DataFrame(rows)
    against_golden = paired_comparisons(df)
    assert sorted((c.variant, c.budget_mode) for c in against_golden) == sorted(
        (v, m) for v in ("tkre", "tkre_shuffled") for m in ("convergence", "steps"))
    assert all(c.n == 3 and not c.averaged for c in against_golden)  # never two budgets averaged into a seed
    declared = declared_comparisons(df, [("tkre", "tkre_shuffled")])
    assert [(c.baseline, c.budget_mode) for c in declared] == [("tkre_shuffled", "convergence"),
                                                                ("tkre_shuffled", "steps")]
    assert [round(c.mean, 6) for c in declared] == [3.0, 3.0]
    labels = list(comparisons_table(declared)["variant - golden_only"])
    assert labels == ["TKRE - tkre_shuffled (to convergence)", "TKRE - tkre_shuffled (fixed steps)"]
    assert {c.budget_check() for c in declared} == {"both converged", "equal steps"}


def test_declared_comparisons_are_checked_and_reach_the_report(tmp_path):
    import pytest

    from tkre.errors import ConfigError
    from tkre.report.tables import write_report
    from tkre.results import ResultRow, SweepDir, TrialRow
    from tkre.config import validate_config
    from tkre.sweep.config import SweepConfig

    with pytest.raises(ConfigError, match="comparisons name variants the sweep does not define: nope"):
        validate_config({"name": "x", "variants": {"tkre": {}}, "comparisons": [["tkre", "nope"]]}, SweepConfig)
    plain = SweepConfig(name="x", variants={"tkre": {}})
    assert "comparisons" not in plain.plan_dump()  # plan.json of a sweep without them is as it was
    rows = []
    for seed in (1, 2):
        for variant, f1 in (("golden_only", 0.3), ("tkre", 0.36), ("tkre_shuffled", 0.33)):
            res = ResultRow(experiment="x", variant=variant, dataset="semeval", data_hash="0", k=8, seed=seed,
                            protocol="knowprompt", backbone="typ_marker", encoder="e", relations=18,
                            test_micro_f1=f1 + seed / 100, experiment_config="{}", finetune_budget="200 steps",
                            finetune_steps=200, stopped_on_patience=False)
            rows.append(TrialRow(sweep="x", phase="grid", trial_id=f"{variant}{seed}", variant=variant, status="ok",
                                 result=res).to_flat())
    sdir = SweepDir(tmp_path)
    sdir.write_results(rows)
    sweep = SweepConfig(name="x", variants={"golden_only": {}, "tkre": {}, "tkre_shuffled": {}},
                        comparisons=[("tkre", "tkre_shuffled")])
    sdir.write_json("plan.json", {"sweep": sweep.plan_dump()})
    md = write_report(tmp_path).markdown_path.read_text()
    assert "TKRE - tkre_shuffled (fixed steps)" in md and "TKRE - golden-only (fixed steps)" in md

"""Issue 16's CPU study sweep (cpu_semeval) and its dev search (cpu_semeval_search): the grid is
5 seeds x the 6 Table-3 variants, a seed's variants share generation and stage 1, and the search's
base is the study's outside the searched fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkre.io import stable_hash
from tkre.pipeline import edkg_key_config, scdg_key_config, stage1_key_config
from tkre.sweep.phases import plan_phases
from tkre.sweep.config import experiment_for, grid_points, load_sweep, resolve_sweep_file

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cpu_semeval"
VARIANTS = ["golden_only", "tkre", "no_edkg", "no_scdg", "bert_masking", "no_scl"]


def _study():
    sweep = load_sweep(resolve_sweep_file("cpu_semeval"))
    return sweep, [(p, experiment_for(sweep, p)) for p in grid_points(sweep)]


def test_study_grid_is_five_seeds_by_six_variants_on_embedded_models():
    sweep, trials = _study()
    assert sorted((p["variant"], c.data.seed) for p, c in trials) == sorted(
        (v, s) for v in VARIANTS for s in (1, 2, 3, 4, 5))
    assert set(sweep.variants) == set(VARIANTS)
    for p, c in trials:
        assert (c.data.dataset, c.data.k, c.data.protocol, c.finetune.backbone) == ("semeval", 8, "knowprompt",
                                                                                   "typ_marker")
        assert c.pretrain.encoder == c.finetune.encoder == "embedded:minilm"
        assert c.edkg.generator.model == c.scdg.generator.model == "embedded:smollm2"
        assert c.edkg.generator.backend == "hf"
        assert c.scdg.constrained is True and "constrained" in c.scdg.model_fields_set  # stated in the file
    by = {p["variant"]: c for p, c in trials if c.data.seed == 1}
    s = {v: c.stages for v, c in by.items()}
    assert not any((s["golden_only"].edkg, s["golden_only"].scdg, s["golden_only"].pretrain_stage1,
                    s["golden_only"].pretrain_stage2))
    assert all((s["tkre"].edkg, s["tkre"].scdg, s["tkre"].pretrain_stage1, s["tkre"].pretrain_stage2))
    assert not s["no_edkg"].edkg and s["no_edkg"].scdg and not s["no_scdg"].scdg and s["no_scdg"].edkg
    assert by["bert_masking"].pretrain.masking == "bert" and by["tkre"].pretrain.masking == "mslm"
    assert by["no_scl"].pretrain.scl.lambda2 == 0 and by["tkre"].pretrain.scl.lambda2 > 0
    # every variant fine-tunes the same way: the comparison is about what comes before fine-tuning
    assert len({c.finetune.model_dump_json() for c in by.values()}) == 1


def test_a_seeds_variants_share_generation_and_stage1():
    """Within a seed every variant that runs EDKG (SCDG) asks for the same EDKG (SCDG) artifact, and stage 1
    is computed twice (MSLM, BERT masking), not once per variant: the artifact keys make the reuse real."""
    _, trials = _study()
    for seed in (1, 2, 3, 4, 5):
        cfgs = {p["variant"]: c for p, c in trials if c.data.seed == seed}
        edkg = {stable_hash(edkg_key_config(c.edkg)) for c in cfgs.values() if c.stages.edkg}
        scdg = {stable_hash(scdg_key_config(c.scdg))
                for c in cfgs.values() if c.stages.scdg}
        stage1 = {v: stable_hash(stage1_key_config(c.pretrain)) for v, c in cfgs.items()
                  if c.stages.pretrain_stage1 and c.stages.edkg}
        assert len(edkg) == 1 and len(scdg) == 1
        assert set(stage1) == {"tkre", "no_scdg", "bert_masking", "no_scl"}
        assert stage1["tkre"] == stage1["no_scdg"] == stage1["no_scl"] != stage1["bert_masking"]
    order = [(p["data.seed"], p["variant"]) for p, _ in trials]
    assert order == sorted(order, key=lambda t: t[0]), "a seed's variants run together (seed outermost)"


def _without(cfg, paths) -> dict:
    data = cfg.model_dump(exclude={"name"})
    for path in paths:
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node.pop(leaf)
    return data


def test_search_plans_on_dev_then_five_seeds_on_test_from_the_studys_base():
    search = load_sweep(resolve_sweep_file("cpu_semeval_search"))
    assert search.search.metric.startswith("dev_") and search.evaluate.seeds == [1, 2, 3, 4, 5]
    assert [p.name for p in plan_phases(search)] == ["search-000", "evaluate"]
    space = set(search.search.space)
    assert {"pretrain.p_relation", "pretrain.p_entity", "pretrain.p_other", "pretrain.scl.tau",
            "pretrain.scl.lambda2", "pretrain.stage1.epochs", "pretrain.stage1.lr", "pretrain.stage2.epochs",
            "pretrain.stage2.lr", "edkg.max_new_tokens", "scdg.samples_per_relation"} <= space
    assert not any(k.startswith("finetune.") for k in space), "fine-tuning stays golden-only's"
    study, _ = _study()
    tkre = experiment_for(study, {"variant": "tkre", "data.seed": 1})
    searched = experiment_for(search, {})
    assert _without(searched, space) == _without(tkre, space)


def test_plan_shows_five_seeds_by_six_variants_and_the_shared_artifacts(monkeypatch):
    """`tkre sweep cpu_semeval --plan [--json]` (no Ray): 30 trials, and the planned artifact keys share
    EDKG and SCDG per seed (4 trials each), stage 1 per seed and masking, as the sizing assumes."""
    import json

    from typer.testing import CliRunner

    import tkre.cluster.runtime
    from tkre.cli import app
    from tkre.sweep.plan import plan_trials, shared_artifacts

    monkeypatch.setattr(tkre.cluster.runtime, "init_ray", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray")))
    r = CliRunner().invoke(app, ["sweep", "cpu_semeval", "--plan", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert sorted((row["variant"], row["config"]["data"]["seed"]) for row in rows) == sorted(
        (v, s) for v in VARIANTS for s in (1, 2, 3, 4, 5))
    text = CliRunner().invoke(app, ["sweep", "cpu_semeval", "--plan"])
    assert text.exit_code == 0 and "30 trial(s)" in text.output
    assert all(v in text.output for v in VARIANTS)
    shared = shared_artifacts(plan_trials(load_sweep(resolve_sweep_file("cpu_semeval"))))
    counts = {stage: (len(groups), sum(len(names) for _, names in groups)) for stage, groups in shared.items()}
    assert counts == {"split": (5, 30), "edkg": (5, 20), "scdg": (5, 20), "stage1": (10, 20), "stage2": (25, 25),
                      "finetune": (30, 30)}


def test_mlm_head_sweep_switches_off_each_remedy_in_the_studys_tkre_setting():
    """cpu_semeval_mlm_head (issue 16 item 3): the study's base exactly; `as_chosen` is the study's TKRE
    trial (the same planned artifact keys, so it is reused); each other variant changes only the
    MLM-head fields, and so reuses the study's EDKG and SCDG and trains its own stage 1."""
    heads = load_sweep(resolve_sweep_file("cpu_semeval_mlm_head"))
    study, _ = _study()
    assert heads.base == study.base
    fields = {"pretrain.mlm_head_init", "pretrain.mlm_head_warmup_epochs"}
    assert all(set(v) <= fields for v in heads.variants.values())
    chosen = experiment_for(study, {"variant": "tkre", "data.seed": 1}).pretrain
    assert (chosen.mlm_head_init, chosen.mlm_head_warmup_epochs) == ("embeddings", 1)
    combos = {(experiment_for(heads, {"variant": v}).pretrain.mlm_head_init,
               experiment_for(heads, {"variant": v}).pretrain.mlm_head_warmup_epochs) for v in heads.variants}
    assert combos == {("embeddings", 1), ("random", 1), ("embeddings", 0), ("random", 0)}
    planned, in_study = _planned("cpu_semeval_mlm_head"), _planned("cpu_semeval")
    assert sorted({s for _, s in planned}) == [1, 2, 3]
    for (variant, seed), trial in planned.items():
        keys, tkre = trial.artifacts, in_study[("tkre", seed)].artifacts
        if variant == "as_chosen":
            assert keys == tkre
        else:
            assert keys["edkg"] == tkre["edkg"] and keys["scdg"] == tkre["scdg"]
            assert keys["stage1"] != tkre["stage1"] and keys["finetune"] != tkre["finetune"]


def test_committed_study_results_are_the_full_grid_traceable_and_quoted():
    """results/cpu_semeval: 30 ok rows (the study file's 5 seeds x 6 variants), each traceable to its config,
    data, generator, model, seed and package version; the headlines that the study page and docs/studies.md
    quote (TKRE - golden-only, mean ± std in pp) are computed from those rows, not typed in."""
    import json

    import pandas as pd

    from tkre.config import ExperimentConfig
    from tkre.report.paired import paired_comparisons

    df = pd.read_parquet(RESULTS / "results.parquet")
    assert sorted(zip(df["variant"], df["seed"])) == sorted((v, s) for v in VARIANTS for s in (1, 2, 3, 4, 5))
    assert set(df["status"]) == {"ok"} and df["test_micro_f1"].between(0, 1).all()
    for col in ("trial_id", "experiment_config", "data_hash", "tkre_version", "encoder", "seed"):
        assert df[col].notna().all(), col
    _, trials = _study()
    planned = {(p["variant"], c.data.seed): c for p, c in trials}
    for row in df.itertuples():
        ran = ExperimentConfig.model_validate(json.loads(row.experiment_config))
        assert ran.data.seed == row.seed and ran.stages == planned[(row.variant, row.seed)].stages
        assert pd.notna(row.edkg_generator) == ran.stages.edkg, (row.variant, row.seed)
        assert pd.notna(row.scdg_generator) == ran.stages.scdg, (row.variant, row.seed)
    # the headlines: the study's, and its three controls' (fine-tuned longer), each TKRE -
    # golden-only over the 5 seeds as `tkre report` pairs them
    for rows in [df] + [pd.read_csv(RESULTS / f) for f in ("steps_results.csv", "epochs15_results.csv",
                                                           "steps15_results.csv")]:
        assert set(rows["status"]) == {"ok"}
        (tkre,) = [c for c in paired_comparisons(rows) if c.variant == "tkre"]
        assert tkre.n == 5
        headline = f"{tkre.mean:+.2f} ± {tkre.std:.2f}".replace("-", "−")  # the docs print a minus sign
        for doc in (RESULTS.parents[1] / "docs" / "studies.md", RESULTS / "README.md"):
            assert headline in doc.read_text(), (doc, headline)


def test_fifteen_epoch_control_reuses_the_step_matched_golden_only_and_the_studys_pretraining():
    """cpu_semeval_15_epochs: the study's base exactly; its golden-only is cpu_semeval_steps' (same planned
    artifacts); its TKRE is the study's up to stage 2 and fine-tunes for 15 epochs, nothing else changed."""
    study, _ = _study()
    assert load_sweep(resolve_sweep_file("cpu_semeval_15_epochs")).base == study.base
    planned, steps, in_study = _planned("cpu_semeval_15_epochs"), _planned("cpu_semeval_steps"), _planned("cpu_semeval")
    assert sorted(planned) == sorted((v, s) for v in ("golden_only", "tkre") for s in (1, 2, 3, 4, 5))
    for seed in (1, 2, 3, 4, 5):
        assert planned[("golden_only", seed)].artifacts == steps[("golden_only", seed)].artifacts
        mine, theirs = planned[("tkre", seed)], in_study[("tkre", seed)]
        assert {k: v for k, v in mine.artifacts.items() if k != "finetune"} == \
            {k: v for k, v in theirs.artifacts.items() if k != "finetune"}
        assert mine.artifacts["finetune"] != theirs.artifacts["finetune"]
        assert mine.experiment.finetune.epochs == 15 == planned[("golden_only", seed)].experiment.finetune.epochs
        assert _without(mine.experiment, ["finetune.epochs"]) == _without(theirs.experiment, ["finetune.epochs"])


def _planned(name: str) -> dict:
    from tkre.sweep.plan import plan_trials

    return {(t.variant, t.experiment.data.seed): t for t in plan_trials(load_sweep(resolve_sweep_file(name)))}


@pytest.mark.parametrize("control, tkre_from, golden_10_from", [
    ("cpu_semeval_steps", "cpu_semeval", "cpu_semeval"),  # TKRE at 10 epochs; the study's golden-only kept
    ("cpu_semeval_steps_15", "cpu_semeval_15_epochs", None),  # TKRE at 15 epochs
])
def test_step_matched_golden_only_takes_at_least_tkres_optimizer_steps(control, tkre_from, golden_10_from):
    """The step-matched controls: the study's base exactly; TKRE is `tkre_from`'s trial (the same planned
    artifacts, so reused); `golden_only` (the baseline the report pairs with) differs from the study's only
    in fine-tuning epochs, enough for at least the optimizer steps TKRE takes with the synthetic samples
    the study kept (its committed rows)."""
    import math

    import pandas as pd

    committed = pd.read_parquet(RESULTS / "results.parquet")
    study, _ = _study()
    assert load_sweep(resolve_sweep_file(control)).base == study.base
    planned, tkre_src, in_study = _planned(control), _planned(tkre_from), _planned("cpu_semeval")
    assert sorted({s for _, s in planned}) == [1, 2, 3, 4, 5]
    for seed in (1, 2, 3, 4, 5):
        assert planned[("tkre", seed)].artifacts == tkre_src[("tkre", seed)].artifacts
        if golden_10_from:
            assert planned[("golden_only_10_epochs", seed)].artifacts == in_study[("golden_only", seed)].artifacts
        matched, ten = planned[("golden_only", seed)].experiment, in_study[("golden_only", seed)].experiment
        assert _without(matched, ["finetune.epochs"]) == _without(ten, ["finetune.epochs"])
        tkre = planned[("tkre", seed)].experiment
        row = committed[(committed["variant"] == "tkre") & (committed["seed"] == seed)].iloc[0]
        golden, used = int(row["relations"]) * matched.data.k, int(row["synthetic_used"])  # K per relation
        steps = lambda n, cfg: math.ceil(n / cfg.finetune.batch_size) * cfg.finetune.epochs  # noqa: E731
        assert steps(golden, matched) >= steps(golden + used, tkre), seed

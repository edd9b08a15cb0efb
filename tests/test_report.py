"""Reports from a results table: mean ± std over seeds, golden-only beside TKRE, the paper's numbers
in their own columns, Optuna plots, Markdown; local and remote (pyarrow.fs URI) sweep directories."""

from __future__ import annotations

import pandas as pd
import pyarrow.fs as pafs
import pytest

from tkre.report.tables import PAPER, golden_vs_tkre, paper_number, results_table, write_report
from tkre.results import ResultRow, SweepDir, TrialRow


def _result(variant, seed, f1, asked, kept, gen="hf:embedded:smollm2", **kw) -> ResultRow:
    on = variant != "golden_only"
    return ResultRow(experiment=f"demo-{variant}", variant=variant, dataset=kw.get("dataset", "semeval"),
                     data_hash="0" * 16, k=8, seed=seed, protocol="knowprompt", backbone="typ_marker",
                     encoder="embedded:minilm", edkg_generator=gen if on else None,
                     scdg_generator=gen if on else None, relations=18, synthetic_asked=asked if on else 0,
                     synthetic_kept=kept if on else 0, dev_micro_f1=f1 - 0.05, test_micro_f1=f1,
                     test_macro_f1=f1 / 2, best_epoch=1, experiment_config="{}",
                     artifact={"split": "s", "finetune": f"f{seed}"}, reused={"split": False},
                     seconds={"total": 1.0})


def _rows() -> pd.DataFrame:
    rows = []
    for seed, (g, t) in enumerate([(0.60, 0.70), (0.64, 0.76)], start=1):
        rows.append(TrialRow(sweep="demo", phase="grid", trial_id=f"golden{seed}", variant="golden_only",
                             status="ok", result=_result("golden_only", seed, g, 0, 0)).to_flat())
        for asked, kept, gen in ((144, 18 * seed, "hf:embedded:smollm2"), (288, 100 + seed, "openai:gpt-3.5")):
            res = _result("tkre", seed, t + asked / 100000, asked, kept, gen)
            rows.append(TrialRow(sweep="demo", phase="grid", trial_id=f"tkre{seed}{asked}", variant="tkre",
                                 status="ok", result=res).to_flat())
    rows.append(TrialRow(sweep="demo", phase="grid", trial_id="bad", variant="tkre", status="error",
                         error="RuntimeError: boom").to_flat())
    for i, (tau, v) in enumerate([(0.05, 0.5), (0.1, 0.6), (0.3, 0.55), (0.2, 0.58)]):
        res = _result("tkre", 1, v + 0.05, 144, 10)
        rows.append(TrialRow(sweep="demo", phase="search-000", trial_id=f"s{i}", variant="tkre", status="ok",
                             param={"pretrain.scl.tau": tau, "finetune.lr": 1e-5 * (i + 1)}, result=res).to_flat())
    rows.append(TrialRow(sweep="demo", phase="search-000", trial_id="asha", status="early_stopped",
                         param={"pretrain.scl.tau": 0.4, "finetune.lr": 1e-5}, last_dev_micro_f1=0.9).to_flat())
    return pd.DataFrame(rows)


def test_paper_numbers():
    assert paper_number("semeval", 8, "typ_marker", "tkre") == 77.6
    assert paper_number("tacred", 32, "genpt", "tkre") == 43.2
    assert paper_number("semeval", 8, "typ_marker", "golden_only") == 70.9
    assert paper_number("tacred", 16, "typ_marker", "no_scl") == 35.9
    assert paper_number("retacred", 16, "typ_marker", "no_scl") is None
    assert paper_number("semeval", 4, "typ_marker", "tkre") is None


def test_rows_flatten_and_back():
    res = _result("tkre", 1, 0.7, 144, 6)
    flat = TrialRow(sweep="s", phase="grid", trial_id="t", variant="tkre", status="ok", result=res).to_flat()
    assert flat["artifact.finetune"] == "f1" and flat["seconds.total"] == 1.0 and flat["synthetic_kept"] == 6
    assert flat["schema_version"] == 1 and flat["variant"] == "tkre"
    # the sweep keeps the pipeline's row whole: every field of it comes back from the flat dict
    assert ResultRow.from_flat({**flat, "time_total_s": 3.0, "date": "x"}) == res
    assert TrialRow.from_flat(flat).result == res


def test_results_table_mean_std_and_variant_names_from_the_rows():
    table = results_table(_rows())
    tk = table[(table["variant"] == "tkre") & (table["generator"] == "hf:embedded:smollm2")].iloc[0]
    assert tk["seeds"] == 2 and tk["paper test micro-F1 %"] == "77.6"
    # (70.144, 76.144) -> mean 73.1, sample std 4.2; kept 18 and 36 of 144 -> mean 27
    assert tk["test micro-F1 %"] == "73.1 ± 4.2" and tk["synthetic kept"] == "27 of 144 asked"
    golden = table[table["variant"] == "golden_only"].iloc[0]
    assert golden["generator"] == "none" and golden["synthetic kept"] == "0"
    assert set(table["variant"]) == {"tkre", "golden_only"}  # search and failed trials left out


def test_golden_only_beside_tkre_with_the_papers_numbers():
    versus = golden_vs_tkre(_rows())
    assert len(versus) == 2  # one row per TKRE cell (two generators), each beside the same golden-only
    r = versus[versus["TKRE generator"] == "hf:embedded:smollm2"].iloc[0]
    # golden 60, 64 -> 62.0 ± 2.8; TKRE 70.144, 76.144 -> 73.1 ± 4.2; difference of the means +11.1
    assert r["golden-only %"] == "62.0 ± 2.8" and r["TKRE %"] == "73.1 ± 4.2"
    assert r["TKRE − golden-only"] == "+11.1" and r["seeds"] == "2 / 2"
    assert (r["paper golden-only %"], r["paper TKRE %"], r["paper TKRE − golden-only"]) == ("70.9", "77.6", "+6.7")
    # golden-only measured alone still gets its row, with the paper's numbers beside it
    alone = golden_vs_tkre(_rows().query("variant != 'tkre'"))
    assert len(alone) == 1 and alone.iloc[0]["TKRE %"] == "" and alone.iloc[0]["golden-only %"] == "62.0 ± 2.8"


def _plan():
    return {"sweep": {"name": "demo", "search": {"metric": "dev_micro_f1", "mode": "max", "space": {
        "pretrain.scl.tau": {"type": "loguniform", "low": 0.03, "high": 0.5},
        "finetune.lr": {"type": "loguniform", "low": 1e-6, "high": 1e-3}}}}}


def test_write_report_markdown_and_plots(tmp_path):
    sdir = SweepDir(tmp_path)
    sdir.write_results(_rows().to_dict("records"))
    sdir.write_json("plan.json", _plan())
    rep = write_report(tmp_path)
    md = rep.markdown_path.read_text()
    assert "golden_only" in md and "27 of 144 asked" in md
    assert "77.6" in md and "70.9" in md and "paper golden-only %" in md and PAPER in md
    # the ASHA-stopped trial (dev 0.9) is not a finished trial: the best stays 60.0 %
    assert "RuntimeError: boom" in md and "best dev_micro_f1 = 60.0%" in md and "1 stopped early" in md
    names = {p.name for p in rep.plots}
    assert {"f1_vs_synthetic.png", "f1_per_generator.png", "optuna_history.png", "optuna_importance.png"} <= names
    for p in rep.plots:
        assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
        assert f"]({p.relative_to(tmp_path / 'report').as_posix()})" in md
    assert rep.published is None


def test_report_reads_the_stored_optuna_study(tmp_path):
    """A sweep with its Optuna database (tkre.sweep.study): the search section and plots come from the
    stored study -- here its best complete trial (61 %) differs from the table's (60 %) -- with the
    pruned trials counted; without the database the study is rebuilt from the table (test above)."""
    import optuna

    sdir = SweepDir(tmp_path)
    sdir.write_results(_rows().to_dict("records"))
    sdir.write_json("plan.json", _plan())
    dists = {k: optuna.distributions.FloatDistribution(1e-6, 0.5, log=True) for k in ("pretrain.scl.tau", "finetune.lr")}
    study = optuna.create_study(study_name="demo/search-000", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                direction="maximize")
    for value, state in ((0.61, "COMPLETE"), (0.5, "COMPLETE"), (None, "PRUNED")):
        study.add_trial(optuna.trial.create_trial(
            params={"pretrain.scl.tau": 0.1, "finetune.lr": 1e-5}, distributions=dists, value=value,
            state=optuna.trial.TrialState[state], intermediate_values={1: 0.9} if value is None else {1: value}))
    md = write_report(tmp_path).markdown_path.read_text()
    assert "best dev_micro_f1 = 61.0%" in md, md
    assert f"Optuna study `demo/search-000` (2 complete, 1 pruned), stored in `{tmp_path / 'optuna.db'}`" in md


def test_report_of_a_remote_sweep_dir(tmp_path, monkeypatch):
    """`tkre report <URI>`: read through pyarrow.fs, report uploaded beside the results."""
    bucket = tmp_path / "bucket"
    (bucket / "runs" / "sweeps" / "demo").mkdir(parents=True)
    subtree = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    monkeypatch.setattr("tkre.store.artifacts.resolve_filesystem", lambda uri: (subtree, uri.split("://", 1)[1]))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    uri = "mock://runs/sweeps/demo"
    sdir = SweepDir(uri)
    assert sdir.remote
    sdir.write_results(_rows().to_dict("records"))
    sdir.write_json("plan.json", _plan())
    assert not (tmp_path / "runs").exists()  # nothing written as a local path named like the URI
    rep = write_report(uri)
    assert rep.published == f"{uri}/report"
    uploaded = bucket / "runs" / "sweeps" / "demo" / "report"
    assert "best dev_micro_f1 = 60.0%" in (uploaded / "report.md").read_text()
    assert (uploaded / "search-000" / "optuna_history.png").is_file()


def test_report_refuses_other_schema_versions_and_non_sweep_dirs(tmp_path):
    from tkre.errors import ConfigError

    with pytest.raises(ConfigError, match="no results.parquet"):
        write_report(tmp_path)
    df = _rows()
    df["schema_version"] = 0
    df.to_parquet(tmp_path / "results.parquet", index=False)
    with pytest.raises(ConfigError, match="schema version"):
        write_report(tmp_path)


def test_stage_seconds_table_means_over_seeds_and_marks_reuse():
    from tkre.report.tables import stage_seconds_table

    df = _rows()
    df["seconds.finetune"] = None
    df["seconds.split"] = 2.0
    df["reused.split"] = df["variant"] == "golden_only"
    golden = df["trial_id"].isin(["golden1", "golden2"])
    df.loc[golden, "seconds.finetune"] = [10.0, 30.0]
    t = stage_seconds_table(df).set_index(["variant", "seeds"])
    assert [c for c in t.columns if c.endswith(" s")] == ["split s", "finetune s", "total s"]  # stages that ran
    g = t.loc[("golden_only", 2)]
    assert g["finetune s"] == "20" and g["split s"] == "2 reused" and g["total s"] == "1"
    tk = t.loc[("tkre", 2)]
    tk = tk.iloc[0] if isinstance(tk, pd.DataFrame) else tk
    assert tk["finetune s"] == "-" and tk["split s"] == "2"


def test_report_says_what_micro_f1_excluded():
    from tkre.report.tables import excluded_note

    def table(**labels):
        return pd.DataFrame([TrialRow(sweep="s", phase="grid", trial_id=f"t{i}", variant="tkre", status="ok",
                                      result=_result("tkre", 1, 0.7, 144, 6, dataset=d).model_copy(
                                          update={"metric_excluded_label": x})).to_flat()
                             for i, (d, x) in enumerate(labels.items())])
    assert excluded_note(table(semeval="Other")) == "`Other` excluded"
    assert excluded_note(table(tacred=None)) == "no class excluded (no no-relation class)"
    both = excluded_note(table(semeval="Other", jsonl=None))
    assert both == "jsonl: no class excluded (no no-relation class); semeval: `Other` excluded"
    # a table written before rows named it: the one convention there was
    assert excluded_note(table(semeval="Other").drop(columns=["metric_excluded_label"])) == \
        "no-relation class excluded"


def test_tables_show_each_cells_fine_tuning_budget_and_steps():
    from tkre.report.tables import steps_label

    rows = []
    for seed in (1, 2):
        for variant, steps, conv, budget in (("golden_only", 90, False, "10 epochs"), ("tkre", 130, False, "10 epochs")):
            res = _result(variant, seed, 0.6, 144, 50).model_copy(update={
                "finetune_steps": steps + seed - 1, "stopped_on_patience": conv, "finetune_budget": budget})
            rows.append(TrialRow(sweep="d", phase="grid", trial_id=f"{variant}{seed}", variant=variant, status="ok",
                                 result=res).to_flat())
    df = pd.DataFrame(rows)
    assert steps_label(df[df["variant"] == "tkre"]) == "10 epochs: 130-131 steps"
    assert steps_label(df.assign(stopped_on_patience=True)) == "10 epochs: 90-131 steps, 4/4 converged"
    assert steps_label(df.assign(finetune_steps=None)) == ""  # rows from before steps were recorded
    versus = golden_vs_tkre(df).iloc[0]
    assert versus["fine-tuning golden-only / TKRE"] == "10 epochs: 90-91 steps / 10 epochs: 130-131 steps"
    assert results_table(df).iloc[0]["fine-tuning"] == "10 epochs: 90-91 steps"


def test_a_grid_over_budgets_gets_a_row_per_budget_never_an_average():
    """A sweep with `finetune.budget` in its grid (two budgets per variant and seed): each table has one
    row per budget, so the steps budget's F1 is never averaged with the other budget's."""
    from tkre.report.tables import stage_seconds_table

    rows = []
    for seed in (1, 2):
        for budget, f1, steps in (("200 steps", 0.50, 200), ("15 epochs", 0.40, 135)):
            for variant, gain in (("golden_only", 0.0), ("tkre", 0.05)):
                res = _result(variant, seed, f1 + gain, 144, 50).model_copy(update={
                    "finetune_steps": steps, "stopped_on_patience": False, "finetune_budget": budget})
                rows.append(TrialRow(sweep="d", phase="grid", trial_id=f"{variant}{seed}{budget}", variant=variant,
                                     status="ok", result=res).to_flat())
    df = pd.DataFrame(rows)
    table = results_table(df).set_index(["variant", "fine-tuning"])["test micro-F1 %"]
    assert table.to_dict() == {("golden_only", "15 epochs: 135 steps"): "40.0 ± 0.0",
                               ("golden_only", "200 steps: 200 steps"): "50.0 ± 0.0",
                               ("tkre", "15 epochs: 135 steps"): "45.0 ± 0.0",
                               ("tkre", "200 steps: 200 steps"): "55.0 ± 0.0"}
    versus = golden_vs_tkre(df)
    assert sorted(zip(versus["golden-only %"], versus["TKRE %"])) == [("40.0 ± 0.0", "45.0 ± 0.0"),
                                                                      ("50.0 ± 0.0", "55.0 ± 0.0")]
    seconds = stage_seconds_table(df)
    assert len(seconds) == 4 and set(seconds["fine-tuning budget"]) == {"200 steps", "15 epochs"}

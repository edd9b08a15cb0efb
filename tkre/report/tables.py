"""`tkre report <sweep-dir>`: the results table -> paper-style tables, PNG plots, one Markdown file.

Reads the sweep directory (`tkre.results.SweepDir`: a local folder or a pyarrow.fs URI such as
`s3://bucket/runs/sweeps/<name>`) -- `results.parquet` (one `TrialRow` per trial) and `plan.json` --
and writes `report/report.md` with:
- **Results**: test micro-F1 (%) mean ± std over seeds per dataset / K / backbone / fine-tuning
  budget / variant / generators / synthetic samples asked, with the kept count, and the paper's
  number in its own column (`paper ...`: Table 2 for `tkre` and `golden_only`, Table 3 for the
  ablations; matched by the sweep file's variant name, never guessed from a config);
- **Golden-only vs TKRE**: per dataset / K / backbone / budget, both measured and their difference,
  beside the paper's; `f1_vs_synthetic.png` (Fig. 6: x = synthetic samples *kept* per relation)
  and `f1_per_generator.png` (Fig. 5) when several amounts / generators were run;
- the generator comparison (`tkre.report.generators`: EDKG/SCDG statistics per generator setting);
- per search phase, Optuna's own plots (`optuna.visualization.matplotlib`: optimisation history and
  parameter importances, PED-ANOVA, no scikit-learn needed) from the phase's stored study
  (`tkre.sweep.study`; for a sweep written before studies were stored, one rebuilt out of the table).
Only finished trials of grid/evaluate phases enter the tables; search trials were selected on dev
and are reported in their own section. Tables are `DataFrame.to_markdown`. For a remote sweep the
report is written locally (under `~/.cache/tkre/reports/`, or `--out`) and, without `--out`, also
uploaded to `<sweep-dir>/report/`.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tkre.io import atomic_write_text, stable_hash
from tkre.report.plots import pyplot, save_figure
from tkre.report.paired import declared_comparisons, paired_comparisons, paired_section, plot_paired_differences
from tkre.results import PLAN_FILE, SweepDir

log = logging.getLogger(__name__)

# Paper numbers (micro-F1 %, RoBERTa-large, mean over seeds) from shared/method.md.
PAPER = "Guo et al., IJCAI 2025: RoBERTa-large, Llama-2-13B-chat"
_DATASETS = ("semeval", "tacred", "tacrev", "retacred")
_T2 = {
    ("tkre", "typ_marker"): ((77.6, 81.7, 84.1), (36.7, 38.3, 39.1), (37.2, 38.2, 39.0), (58.7, 63.8, 65.5)),
    ("tkre", "genpt"): ((80.7, 84.9, 86.6), (39.6, 42.1, 43.2), (40.2, 41.3, 42.9), (61.3, 67.6, 68.9)),
    ("golden_only", "typ_marker"): ((70.9, 77.1, 80.3), (28.9, 32.0, 32.4), (27.6, 31.2, 32.0), (44.8, 54.1, 60.0)),
    ("golden_only", "genpt"): ((77.1, 81.5, 83.9), (35.7, 36.6, 37.4), (34.4, 34.6, 36.2), (57.2, 60.4, 65.2)),
}
_T3 = {  # TYP Marker; SemEval then TACRED, K = 8/16/32
    "no_edkg": ((73.1, 75.8, 80.2), (30.9, 33.7, 36.1)),
    "no_scdg": ((75.2, 79.3, 82.1), (34.1, 35.3, 37.3)),
    "bert_masking": ((75.3, 78.5, 81.1), (35.4, 36.3, 36.9)),
    "no_scl": ((76.2, 79.8, 82.9), (35.2, 35.9, 37.4)),
}
_K_INDEX = {8: 0, 16: 1, 32: 2}


def paper_number(dataset: str, k: int, backbone: str, variant: str) -> float | None:
    """The paper's test micro-F1 (%) for this cell, or None if the paper has none."""
    if k not in _K_INDEX or dataset not in _DATASETS:
        return None
    i = _K_INDEX[k]
    if (variant, backbone) in _T2:
        return _T2[(variant, backbone)][_DATASETS.index(dataset)][i]
    if variant in _T3 and backbone == "typ_marker" and dataset in ("semeval", "tacred"):
        return _T3[variant][0 if dataset == "semeval" else 1][i]
    return None


def _finished(df: pd.DataFrame, *, scored: bool = True) -> pd.DataFrame:
    """Finished grid/evaluate trials; `scored`: only those with a test score (not generation-only)."""
    ok = df[(df["status"] == "ok") & (~df["phase"].astype(str).str.startswith("search"))]
    ok = (ok[ok["test_micro_f1"].notna()] if scored else ok).copy()
    # a grouping key: "" where a row has no budget (rows written before budgets were recorded)
    ok["finetune_budget"] = ok["finetune_budget"].fillna("").astype(str) if "finetune_budget" in ok else ""
    return ok


def excluded_note(df: pd.DataFrame) -> str:
    """What micro-F1 left out, per dataset, from the rows' `metric_excluded_label` (tables written
    before rows carried it: the no-relation class, the only convention there was)."""
    ok = _finished(df)
    if "metric_excluded_label" not in ok.columns or ok.empty:
        return "no-relation class excluded"
    by_dataset = {}
    for dataset, label in zip(ok["dataset"], ok["metric_excluded_label"]):
        by_dataset.setdefault(str(dataset), set()).add(None if pd.isna(label) else str(label))
    notes = []
    for dataset, labels in sorted(by_dataset.items()):
        said = ", ".join(f"`{x}` excluded" if x else "no class excluded (no no-relation class)"
                         for x in sorted(labels, key=lambda x: x or ""))
        notes.append(f"{dataset}: {said}" if len(by_dataset) > 1 else said)
    return "; ".join(notes)


def _fmt(values: pd.Series) -> str:
    mean, std = values.mean(), values.std()
    return f"{mean:.1f}" if len(values) < 2 or math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _paper(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def generator_label(edkg: str | None, scdg: str | None) -> str:
    """One label for a trial's generators: `none`, the shared one, or both named."""
    edkg, scdg = (None if pd.isna(edkg) else edkg), (None if pd.isna(scdg) else scdg)
    if edkg is None and scdg is None:
        return "none"
    if edkg is None or scdg is None or edkg == scdg:
        return str(edkg or scdg)
    return f"EDKG {edkg}; SCDG {scdg}"


#: a table row per cell; a sweep with a grid over `finetune.budget`: a row per budget (never averaged)
_CELL = ["dataset", "k", "backbone", "finetune_budget", "variant", "edkg_generator", "scdg_generator",
         "synthetic_asked"]


def steps_label(g: pd.DataFrame) -> str:
    """Fine-tuning budget and steps of a cell's rows: `10 epochs: 90 steps`, `convergence (...): 60-110 steps,
    3/5 converged`; empty for rows written before budgets were recorded."""
    steps = g["finetune_steps"].dropna().astype(float) if "finetune_steps" in g else pd.Series(dtype=float)
    if steps.empty:
        return ""
    budgets = ", ".join(sorted({str(b) for b in g["finetune_budget"].dropna() if str(b)}))
    span = f"{steps.min():.0f}" if steps.min() == steps.max() else f"{steps.min():.0f}-{steps.max():.0f}"
    converged = g["stopped_on_patience"].fillna(False).astype(bool).sum()
    return f"{budgets}: {span} steps" + (f", {converged}/{len(g)} converged" if converged else "")


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (over seeds) of test micro-F1 in %, per cell, with the paper's number beside it."""
    ok = _finished(df)
    if ok.empty:
        return pd.DataFrame()
    rows = []
    for cell, g in ok.groupby(_CELL, dropna=False, sort=True):
        c = dict(zip(_CELL, cell))
        paper = paper_number(str(c["dataset"]), int(c["k"]), str(c["backbone"]), str(c["variant"]))
        kept = g["synthetic_kept"].astype(float).mean()
        rows.append({"dataset": c["dataset"], "K": int(c["k"]), "backbone": c["backbone"],
                     "variant": "" if pd.isna(c["variant"]) else c["variant"],
                     "generator": generator_label(c["edkg_generator"], c["scdg_generator"]),
                     "synthetic kept": f"{kept:.0f} of {int(c['synthetic_asked'])} asked"
                     if c["synthetic_asked"] else "0",
                     "seeds": len(g), "test micro-F1 %": _fmt(100 * g["test_micro_f1"].astype(float)),
                     "dev micro-F1 %": _fmt(100 * g["dev_micro_f1"].astype(float)),
                     "fine-tuning": steps_label(g), "paper test micro-F1 %": _paper(paper)})
    return pd.DataFrame(rows)


def stage_seconds_table(df: pd.DataFrame) -> pd.DataFrame:
    """Wall seconds per stage, mean over seeds, per cell: where a run's time went. A stage found in
    the store costs only its lookup (marked `reused` when every seed reused it)."""
    ok = _finished(df)
    stages = [s for s in ("split", "edkg", "scdg", "stage1", "stage2", "finetune", "total")
              if f"seconds.{s}" in ok and ok[f"seconds.{s}"].notna().any()]
    if ok.empty or not stages:
        return pd.DataFrame()
    rows = []
    for cell, g in ok.groupby(_CELL, dropna=False, sort=True):
        c = dict(zip(_CELL, cell))
        row = {"dataset": c["dataset"], "K": int(c["k"]), "backbone": c["backbone"],
               "variant": "" if pd.isna(c["variant"]) else c["variant"], "seeds": len(g)}
        if ok["finetune_budget"].nunique() > 1:
            row["fine-tuning budget"] = c["finetune_budget"]
        for s in stages:
            secs = g[f"seconds.{s}"].astype(float)
            reused = f"reused.{s}" in g and bool(g[f"reused.{s}"].fillna(False).astype(bool).all())
            row[f"{s} s"] = "-" if secs.isna().all() else f"{secs.mean():.0f}" + (" reused" if reused else "")
        rows.append(row)
    return pd.DataFrame(rows)


def golden_vs_tkre(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset / K / backbone (and TKRE's generators and synthetic amount): measured golden-only
    and TKRE (mean ± std over seeds), their difference, and the paper's numbers for the same cell in
    columns labelled as the paper's."""
    ok = _finished(df)
    keys = ["dataset", "k", "backbone", "finetune_budget"]
    golden_rows = dict(list(ok[ok["variant"] == "golden_only"].groupby(keys, dropna=False, sort=True)))
    golden = {cell: 100 * g["test_micro_f1"].astype(float) for cell, g in golden_rows.items()}
    tkre_rows = dict(list(ok[ok["variant"] == "tkre"].groupby(
        keys + ["edkg_generator", "scdg_generator", "synthetic_asked"], dropna=False, sort=True)))
    tkre_cells = {cell: 100 * g["test_micro_f1"].astype(float) for cell, g in tkre_rows.items()}
    n = len(keys)
    cells = sorted({c[:n] + (None, None, None) for c in golden if not any(t[:n] == c for t in tkre_cells)}
                   | set(tkre_cells), key=lambda c: tuple(str(x) for x in c))
    rows = []
    for cell in cells:
        dataset, k, backbone = cell[:3]
        g, t = golden.get(cell[:n], pd.Series(dtype=float)), tkre_cells.get(cell, pd.Series(dtype=float))
        pg, pt = (paper_number(dataset, int(k), backbone, v) for v in ("golden_only", "tkre"))
        rows.append({"dataset": dataset, "K": int(k), "backbone": backbone,
                     "TKRE generator": generator_label(cell[n], cell[n + 1]) if len(t) else "",
                     "golden-only %": _fmt(g) if len(g) else "", "TKRE %": _fmt(t) if len(t) else "",
                     "seeds": f"{len(g)} / {len(t)}",
                     "TKRE − golden-only": f"{t.mean() - g.mean():+.1f}" if len(g) and len(t) else "",
                     "fine-tuning golden-only / TKRE": " / ".join(
                         steps_label(rows[c]) if c in rows else "" for rows, c in ((golden_rows, cell[:n]),
                                                                                   (tkre_rows, cell))).strip(" /"),
                     "paper golden-only %": _paper(pg), "paper TKRE %": _paper(pt),
                     "paper TKRE − golden-only": "" if pg is None or pt is None else f"{pt - pg:+.1f}"})
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    return df.astype(str).replace({"nan": "", "None": ""}).to_markdown(index=False, disable_numparse=True)


SOURCE_LABELS = {"llm": "synthetic (generator)", "oracle": "extra golden (oracle)", "shuffled": "shuffled labels",
                 "golden_repeat": "golden repeated"}


def synthetic_curves(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Fig. 6's curves: per (dataset, K, backbone) and synthetic source, test micro-F1 (mean, std over seeds)
    against the samples kept per relation (x); the no-synthetic point (SCDG off) starts every curve."""
    ok = ok.assign(kept_per_relation=ok["synthetic_kept"].astype(float) / ok["relations"].astype(float),
                   source=ok["synthetic_source"] if "synthetic_source" in ok else None)
    zero = ok["synthetic_asked"].astype(float) == 0
    out = {}
    for (dataset, k, backbone), g in ok.groupby(["dataset", "k", "backbone"]):
        sources = sorted({str(x) for x in g.loc[~zero, "source"] if x is not None and x == x}) or ["llm"]
        for source in sources:
            on = g[zero.loc[g.index] | (g["source"] == source) | (g["source"].isna() & (source == "llm"))]
            out[f"{dataset} K={k} {backbone}: {SOURCE_LABELS.get(source, source)}"] = on.groupby(
                "synthetic_asked").agg(x=("kept_per_relation", "mean"), mean=("test_micro_f1", "mean"),
                                       std=("test_micro_f1", "std")).sort_values("x")
    return out


def _plot_f1_vs_kept(ok: pd.DataFrame, out: Path) -> Path:
    """Fig. 6: test micro-F1 against the synthetic samples kept per relation (mean ± std over seeds), one
    curve per synthetic source (the generator's samples; the oracle's real examples: extra golden data)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, stats in synthetic_curves(ok).items():
        ax.errorbar(stats["x"], 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), marker="o", capsize=3,
                    label=label)
    ax.set_xlabel("synthetic samples kept per relation")
    ax.set_ylabel("test micro-F1 (%)")
    ax.set_title("F1 vs synthetic data kept")
    ax.legend(fontsize=7)
    return save_figure(fig, out)


def _plot_per_generator(ok: pd.DataFrame, out: Path) -> Path:
    plt = pyplot()
    labels = [generator_label(e, s) for e, s in zip(ok["edkg_generator"], ok["scdg_generator"])]
    stats = ok.assign(generator=labels).groupby("generator")["test_micro_f1"].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar([str(i) for i in stats.index], 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), capsize=3)
    ax.set_ylabel("test micro-F1 (%)")
    ax.set_title("F1 per generator")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return save_figure(fig, out)


def optuna_study(df: pd.DataFrame, space: dict[str, dict], metric: str = "dev_micro_f1", mode: str = "max"):
    """An Optuna study rebuilt from the finished search trials in the results table."""
    import optuna

    from tkre.sweep.config import Distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: Distribution.model_validate(v).to_optuna() for k, v in space.items()}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, r in df[df["status"] == "ok"].iterrows():
        params = {k: r.get(f"param.{k}") for k in dists}
        if pd.isna(r.get(metric)) or any(v is None or pd.isna(v) for v in params.values()):
            continue
        params = {k: (int(v) if isinstance(dists[k], optuna.distributions.IntDistribution) else v)
                  for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r[metric])))
    return study


def _plot_optuna(study, out_dir: Path, metric: str) -> list[Path]:
    """Optuna's own matplotlib plots: optimisation history and (>= 2 trials) parameter importances."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    pyplot()
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study, target_name=metric)
        paths.append(save_figure(ax.figure, out_dir / "optuna_history.png"))
        if len(study.trials) >= 2:
            try:
                ax = ovm.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                                                target_name=metric)
            except (RuntimeError, ValueError) as e:  # degenerate trials: say so, keep the report
                log.warning("parameter importances not plotted: %s", e)
            else:
                paths.append(save_figure(ax.figure, out_dir / "optuna_importance.png"))
    return paths


@dataclass
class Report:
    markdown_path: Path  # local file
    table: pd.DataFrame
    plots: list[Path] = field(default_factory=list)
    markdown_text_tables: str = ""
    published: str | None = None  # remote sweeps: where the report folder was uploaded


def write_report(sweep_dir: str | Path, out: str | Path | None = None) -> Report:
    """Write report.md + PNGs for a sweep directory (local or URI); returns what was written."""
    sdir = SweepDir(sweep_dir)
    df = sdir.read_results()
    out_dir = (Path(out).expanduser() if out else Path.home() / ".cache" / "tkre" / "reports" /
               stable_hash(sdir.uri, 12) if sdir.remote else Path(sdir.root) / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = sdir.read_json(PLAN_FILE) or {}
    name = plan.get("sweep", {}).get("name", sdir.uri.rstrip("/").rsplit("/", 1)[-1])
    table, versus = results_table(df), golden_vs_tkre(df)
    counts = ", ".join(f"{v} {k}" for k, v in df["status"].value_counts().items())
    parts = [f"# Sweep `{name}`", "", f"{len(df)} trials: {counts}.",
             f"Test micro-F1 in %, mean ± std over seeds ({excluded_note(df)}); the best epoch is "
             f"chosen on dev. Columns starting with `paper` hold the paper's numbers ({PAPER}) for the "
             "same cell, not measurements of this sweep.", ""]
    text = ["## Results", "", _markdown(table) if not table.empty else
            "(no finished grid/evaluate trials with test scores)", ""]
    if not versus.empty:
        text += ["## Golden-only vs TKRE (measured here, and the paper's)", "", _markdown(versus), ""]
    timing = stage_seconds_table(df)
    if not timing.empty:
        text += ["## Seconds per stage (wall, mean over seeds)", "", _markdown(timing), ""]
    parts += text
    plots: list[Path] = []
    ok = _finished(df)
    comparisons = paired_comparisons(ok) + declared_comparisons(ok, plan.get("sweep", {}).get("comparisons") or [])
    parts += paired_section(ok, paper_number, comparisons)  # per-seed differences with golden-only, tests, Table 3
    if comparisons:
        plots.append(plot_paired_differences(comparisons, out_dir / "paired_differences.png"))
    if ok["synthetic_asked"].nunique() > 1:
        plots.append(_plot_f1_vs_kept(ok, out_dir / "f1_vs_synthetic.png"))
    labels = {generator_label(e, s) for e, s in zip(ok["edkg_generator"], ok["scdg_generator"])}
    if len(labels) > 1:
        plots.append(_plot_per_generator(ok, out_dir / "f1_per_generator.png"))
    from tkre.report.curves import curve_section

    curve_lines, curve_plots = curve_section(ok, out_dir)
    parts += curve_lines
    plots += curve_plots
    parts += _search_sections(df, plan, out_dir, plots, sdir.uri, name)
    from tkre.report.generators import generator_report

    generators = generator_report(_finished(df, scored=False), out_dir)
    if generators is not None:
        parts += [generators.markdown]
        plots += generators.plots
    failed = df[df["status"] == "error"]
    if not failed.empty:
        parts += ["## Failed trials", ""] + [f"- `{r['trial_id']}`: {str(r['error']).splitlines()[0][:300]}"
                                              for _, r in failed.iterrows()] + [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in plots] + [""]
    md = out_dir / "report.md"
    atomic_write_text(md, "\n".join(parts))
    published = sdir.upload(out_dir, "report") if sdir.remote and not out else None
    return Report(md, table, plots, "\n".join(text), published)


def _search_sections(df: pd.DataFrame, plan: dict, out_dir: Path, plots: list[Path], sweep_dir: str,
                     name: str) -> list[str]:
    search = df[df["phase"].astype(str).str.startswith("search")]
    s = plan.get("sweep", {}).get("search") or {}
    if search.empty or not s.get("space"):
        return []
    metric = s.get("metric", "dev_micro_f1")
    parts = []
    for phase, g in search.groupby("phase"):
        from optuna.trial import TrialState

        from tkre.sweep.study import load_phase_study, study_location

        stored = load_phase_study(sweep_dir, name, str(phase))
        study = stored or optuna_study(g, s["space"], metric, s.get("mode", "max"))
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            continue
        pdir = out_dir / str(phase)
        pdir.mkdir(exist_ok=True)
        plots += _plot_optuna(study, pdir, metric)
        best = study.best_trial
        stopped = int((g["status"] == "early_stopped").sum())
        parts += [f"## Search `{phase}`", "", f"{len(g)} trials ({stopped} stopped early by ASHA); "
                  f"best {metric} = {100 * best.value:.1f}% with "
                  + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                              for k, v in best.params.items()), ""]
        if stored is not None:
            states = pd.Series([t.state.name.lower() for t in stored.trials]).value_counts()
            parts += [f"Optuna study `{stored.study_name}` (" + ", ".join(f"{v} {k}" for k, v in states.items())
                      + f"), stored in `{study_location(sweep_dir)}`.", ""]
    return parts

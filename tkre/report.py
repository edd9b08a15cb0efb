"""`tkre report <sweep-dir>`: the results table -> paper-style tables, PNG plots, one Markdown file.

Reads `<sweep-dir>/results.parquet` (one row per trial, written by tkre.sweep) and writes
`<sweep-dir>/report/report.md` with:
- a results table: test micro-F1 (%) mean +- std over seeds per dataset / K / backbone / variant /
  generator, with the paper's number side by side where the paper has one (shared/method.md:
  Table 2 for TKRE and the golden-only TYP Marker baseline, Table 3 for the ablations);
- `f1_vs_synthetic.png` (Fig. 6 style) when several synthetic-per-relation values were run;
- `f1_per_generator.png` (Fig. 5 style) when several generators were run;
- `optuna_history.png` and `optuna_importance.png` for search phases (importances computed with
  optuna.importance from the trials in the table, plotted with matplotlib; no plotly needed).
Only finished trials of grid/evaluate phases enter the results table; search trials are reported in
the Optuna section (they were selected on dev and are not test results).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tkre.errors import ConfigError
from tkre.io import atomic_write_text
from tkre.report_paired import paired_section

log = logging.getLogger(__name__)

# Paper numbers (micro-F1 %, RoBERTa-large, mean over seeds) from shared/method.md.
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


def infer_variant(config_json: str | None) -> str:
    """Name of the Table-3 variant an experiment config is (when the sweep did not name one)."""
    if not config_json:
        return "unknown"
    c = json.loads(config_json)
    st, pre = c.get("stages", {}), c.get("pretrain", {})
    if not any(st.get(s, True) for s in ("edkg", "scdg", "pretrain_stage1", "pretrain_stage2")):
        return "golden_only"
    if not st.get("edkg", True):
        return "no_edkg"
    if not st.get("scdg", True):
        return "no_scdg"
    if pre.get("masking") == "bert":
        return "bert_masking"
    if (pre.get("scl") or {}).get("lambda2", 1.0) == 0:
        return "no_scl"
    return "tkre"


def load_results(sweep_dir: str | Path) -> pd.DataFrame:
    path = Path(sweep_dir) / "results.parquet"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no results.parquet (is this a sweep directory? run `tkre sweep` first)")
    df = pd.read_parquet(path)
    if "experiment_config" in df:
        inferred = df["experiment_config"].map(infer_variant)
        df["variant_kind"] = inferred
    return df


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f}" if n < 2 or math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (over seeds) of test micro-F1 in %, per cell, with the paper's number beside it."""
    ok = df[(df.get("status") == "ok") & (~df["phase"].astype(str).str.startswith("search"))].copy()
    if "test_micro_f1" in ok:
        ok = ok[ok["test_micro_f1"].notna()]  # generation-only trials have no F1
    if ok.empty:
        return pd.DataFrame()
    ok["variant"] = ok["variant"].where(ok["variant"].notna(), ok.get("variant_kind"))
    keys = ["dataset", "k", "backbone", "variant", "generator", "synthetic_asked"]
    keys = [k for k in keys if k in ok]
    rows = []
    for cell, g in ok.groupby(keys, dropna=False, sort=True):
        cell = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        test = 100 * g["test_micro_f1"].astype(float)
        dev = 100 * g["dev_micro_f1"].astype(float)
        kind = g["variant_kind"].iloc[0] if "variant_kind" in g else str(cell.get("variant"))
        paper = paper_number(str(cell.get("dataset")), int(cell.get("k", 0)), str(cell.get("backbone")), kind)
        rows.append({**cell, "seeds": len(g), "test micro-F1 %": _fmt(test.mean(), test.std(), len(g)),
                     "dev micro-F1 %": _fmt(dev.mean(), dev.std(), len(g)),
                     "paper %": "" if paper is None else f"{paper:.1f}",
                     "_test_mean": test.mean()})
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if not c.startswith("_")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(r[c]) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _plot_line(df: pd.DataFrame, x: str, out: Path, title: str, xlabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for dataset, g in df.groupby("dataset"):
        stats = g.groupby(x)["test_micro_f1"].agg(["mean", "std"]).sort_index()
        ax.errorbar(stats.index, 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), marker="o", capsize=3,
                    label=str(dataset))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test micro-F1 (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _plot_bars(df: pd.DataFrame, x: str, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = df.groupby(x)["test_micro_f1"].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.bar([str(i) for i in stats.index], 100 * stats["mean"], yerr=100 * stats["std"].fillna(0), capsize=3)
    ax.set_ylabel("test micro-F1 (%)")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def optuna_study(df: pd.DataFrame, space: dict[str, dict], metric: str = "dev_micro_f1", mode: str = "max"):
    """An Optuna study rebuilt from the search trials in the results table (finished ones)."""
    import optuna

    from tkre.sweep_config import Distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: Distribution.model_validate(v).to_optuna() for k, v in space.items()}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, r in df.iterrows():
        params = {k: r.get(f"param.{k}") for k in dists}
        if r.get(metric) is None or pd.isna(r.get(metric)) or any(v is None or pd.isna(v) for v in params.values()):
            continue
        params = {k: (int(v) if isinstance(dists[k], optuna.distributions.IntDistribution) else v)
                  for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r[metric])))
    return study


def _plot_optuna(study, out_dir: Path, metric: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    paths = []
    values = [t.value for t in study.trials]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    best = pd.Series(values).cummax() if study.direction.name == "MAXIMIZE" else pd.Series(values).cummin()
    ax.plot(range(len(values)), [100 * v for v in values], "o", label="trial")
    ax.plot(range(len(values)), 100 * best, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("Optuna optimisation history")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "optuna_history.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if len(study.trials) >= 2 and len(study.trials[0].params) >= 1:
        try:
            imp = optuna.importance.get_param_importances(study)
        except Exception as e:  # too few/degenerate trials: say so instead of failing the report
            log.warning("parameter importance not computed: %s", e)
            return paths
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.barh(list(imp)[::-1], list(imp.values())[::-1])
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title("Optuna parameter importance")
        fig.tight_layout()
        paths.append(out_dir / "optuna_importance.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


@dataclass
class Report:
    markdown_path: Path
    table: pd.DataFrame
    plots: list[Path] = field(default_factory=list)
    markdown_text_tables: str = ""


def write_report(sweep_dir: str | Path, out: str | Path | None = None) -> Report:
    """Write report.md + PNGs for a sweep directory; returns what was written."""
    sweep_dir = Path(sweep_dir)
    df = load_results(sweep_dir)
    out_dir = Path(out) if out else sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = json.loads((sweep_dir / "plan.json").read_text()) if (sweep_dir / "plan.json").is_file() else {}
    name = plan.get("sweep", {}).get("name", sweep_dir.name)
    table = results_table(df)
    parts = [f"# Sweep `{name}`", "",
             f"{len(df)} trials: " + ", ".join(f"{v} {k}" for k, v in df["status"].value_counts().items()) + ".",
             "Test micro-F1 in %, mean ± std over seeds (no-relation class excluded); the best epoch is "
             "chosen on dev. `paper %` is the IJCAI 2025 paper's RoBERTa-large number for the same cell.", ""]
    text_table = _markdown(table) if not table.empty else "(no finished grid/evaluate trials with test scores)"
    parts += ["## Results", "", text_table, ""]
    plots: list[Path] = []
    ok = df[(df["status"] == "ok") & (~df["phase"].astype(str).str.startswith("search"))]
    scored = ok[ok["test_micro_f1"].notna()] if "test_micro_f1" in ok else ok.iloc[0:0]
    parts += paired_section(scored, paper_number)  # per-seed differences with golden-only, tests, Table 3
    if "synthetic_asked" in scored and scored["synthetic_asked"].nunique() > 1:
        plots.append(_plot_line(scored, "synthetic_asked", out_dir / "f1_vs_synthetic.png",
                                "F1 vs synthetic samples per relation", "synthetic samples per relation"))
    if "generator" in scored and scored["generator"].nunique() > 1:
        plots.append(_plot_bars(scored, "generator", out_dir / "f1_per_generator.png", "F1 per generator"))
    search = df[df["phase"].astype(str).str.startswith("search")]
    space = (plan.get("sweep", {}).get("search") or {}).get("space")
    if not search.empty and space:
        s = plan["sweep"]["search"]
        for phase, g in search.groupby("phase"):
            study = optuna_study(g, space, s.get("metric", "dev_micro_f1"), s.get("mode", "max"))
            if not study.trials:
                continue
            pdir = out_dir / str(phase)
            pdir.mkdir(exist_ok=True)
            plots += _plot_optuna(study, pdir, s.get("metric", "dev_micro_f1"))
            best = study.best_trial
            parts += [f"## Search `{phase}`", "", f"{len(study.trials)} finished trials; best "
                      f"{s.get('metric', 'dev_micro_f1')} = {100 * best.value:.1f}% with "
                      + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                                  for k, v in best.params.items()), ""]
    from tkre.report_generators import generator_report

    generators = generator_report(ok, out_dir)
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
    return Report(md, table, plots, text_table)

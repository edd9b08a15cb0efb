"""Learning curves from the results table: what a user looks at first to see whether training had
converged and how the variants differ along the way.

Every row already carries its fine-tuning history (`epoch_history`: train loss and dev micro-F1 per
epoch) and its pre-training history (`pretrain_history`: per stage, train loss and held-out MSLM/SCL
losses per epoch). Curves are grouped by (dataset, K, backbone) cell and variant; each point is the
mean over the variant's seeds at that epoch, with a ± std band (an epoch only some seeds reached, as
under early stopping, is averaged over those that did; the count is in the table).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tkre.report.plots import pyplot, save_figure
from tkre.results import json_field

FINETUNE_METRICS = ("train_loss", "dev_micro_f1")
PRETRAIN_METRICS = ("train_loss", "heldout_mslm_loss", "heldout_scl_loss")
CELL = ["dataset", "k", "backbone"]


def finetune_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, variant, epoch, metric): mean, std and n over seeds. Epochs are 1-based.
    Where fine-tuning evaluated every N optimizer steps (`finetune.eval_every_steps` in any row), the
    points are keyed by `step` instead: several evaluations may fall in one epoch."""
    x = "step" if any(_eval_every_steps(r) for _, r in rows.iterrows()) else "epoch"
    long = []
    for _, r in rows.iterrows():
        for h in json_field(r.get("epoch_history"), []):
            at = h.get("global_step") if x == "step" else (int(h["epoch"]) + 1 if h.get("epoch") is not None else None)
            for m in FINETUNE_METRICS:
                if isinstance(h.get(m), (int, float)) and at is not None:
                    long.append({**{c: r[c] for c in CELL}, "variant": r.get("variant") or "-",
                                 x: int(at), "metric": m, "value": float(h[m])})
    return _aggregate(pd.DataFrame(long), ["variant", x, "metric"])


def x_axis(curves: pd.DataFrame) -> str:
    """The column the points of `curves` are keyed by: `step` (step-evaluated fine-tuning) or `epoch`."""
    return "step" if "step" in curves.columns else "epoch"


def _eval_every_steps(row) -> int | None:
    config = json_field(row.get("experiment_config"), {})
    finetune = config.get("finetune") if isinstance(config, dict) else None
    return finetune.get("eval_every_steps") if isinstance(finetune, dict) else None


def pretrain_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, variant, stage, epoch, metric): mean, std and n over seeds. Epochs are 1-based."""
    long = []
    for _, r in rows.iterrows():
        stages = json_field(r.get("pretrain_history"), {})
        for stage, history in (stages.items() if isinstance(stages, dict) else []):
            for i, h in enumerate(history):
                for m in PRETRAIN_METRICS:
                    if isinstance(h.get(m), (int, float)):
                        long.append({**{c: r[c] for c in CELL}, "variant": r.get("variant") or "-", "stage": stage,
                                     "epoch": int(h.get("epoch", i)) + 1, "metric": m, "value": float(h[m])})
    return _aggregate(pd.DataFrame(long), ["variant", "stage", "epoch", "metric"])


def _aggregate(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if long.empty:
        return long
    g = long.groupby(CELL + keys, sort=True)["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index().fillna({"std": 0.0})


def _cell_title(cell) -> str:
    dataset, k, backbone = cell
    return f"{dataset} K={k} {backbone}"


def plot_curves(curves: pd.DataFrame, metrics: tuple[str, ...], out: Path, by: str = "variant",
                title: str = "") -> Path | None:
    """A grid of panels: one row per cell, one column per metric; one line (± std band) per `by` value."""
    metrics = tuple(m for m in metrics if m in set(curves["metric"]))
    if curves.empty or not metrics:
        return None
    plt = pyplot()
    x = x_axis(curves)
    cells = list(curves.groupby(CELL).groups)
    fig, axes = plt.subplots(len(cells), len(metrics), figsize=(4.5 * len(metrics), 3.2 * len(cells)),
                             squeeze=False)
    for i, cell in enumerate(cells):
        c = curves[(curves[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for name, g in c[c["metric"] == metric].groupby(by):
                ax.plot(g[x], g["mean"], marker="o", ms=3, label=str(name))
                ax.fill_between(g[x], g["mean"] - g["std"], g["mean"] + g["std"], alpha=0.2)
            ax.set_title(f"{_cell_title(cell)}: {metric}", fontsize=9)
            ax.set_xlabel("optimizer step" if x == "step" else "epoch")
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def curve_section(rows: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[Path]]:
    """The report's learning-curve section (Markdown lines) and its plots."""
    plots = []
    ft = finetune_curves(rows)
    if not ft.empty:
        plots.append(plot_curves(ft, FINETUNE_METRICS, out_dir / "learning_curves.png",
                                 title="fine-tuning: mean ± std over seeds"))
    pt = pretrain_curves(rows)
    for stage, g in (pt.groupby("stage") if not pt.empty else []):
        plots.append(plot_curves(g, PRETRAIN_METRICS, out_dir / f"pretraining_{stage}_curves.png",
                                 title=f"pre-training {stage}: mean ± std over seeds"))
    plots = [p for p in plots if p is not None]
    if not plots:
        return [], []
    x = x_axis(ft)
    where = "at each evaluation (optimizer step)" if x == "step" else "per epoch (1-based)"
    lines = ["## Learning curves", "",
             f"Fine-tuning train loss and dev micro-F1 {where}, and pre-training losses per stage: "
             "mean ± std over seeds, per variant."]
    if not ft.empty:
        last = ft[ft["metric"] == "dev_micro_f1"].sort_values(x).groupby(CELL + ["variant"]).tail(1)
        lines += ["", f"| cell | variant | last {x} | dev micro-F1 (%) | seeds |", "|---|---|---|---|---|"]
        lines += [f"| {_cell_title((r['dataset'], r['k'], r['backbone']))} | {r['variant']} | {r[x]} | "
                  f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} | {r['n']} |" for _, r in last.iterrows()]
    return lines + [""], plots

"""Paired comparison with golden-only, and the ablations laid out like the paper's Table 3.

A variant and golden-only trained on the same K-shot split are a pair: rows are matched by
(dataset, K, backbone, seed), so the seed-to-seed spread of the split -- larger at CPU scale than
any effect seen -- cancels out of the difference. For each variant of each (dataset, K, backbone)
cell that also holds golden-only trials, the report gives the per-seed differences (variant minus
golden-only, test micro-F1 in percentage points), their mean ± std, and two paired tests from
scipy.stats: Wilcoxon's signed-rank test (two-sided; exact for small samples without ties, so with
n seeds its p-value cannot fall below 2 / 2^n) and the paired t-test. Seeds that only one side has
are listed, never dropped silently; several rows for one seed and variant are averaged and listed.
Each mean difference comes with its 95 % confidence interval (Student's t over the seeds: mean ±
t(0.975, n - 1) · std / √n).

A comparison is fair when both arms took the same optimizer steps in fine-tuning (within
`STEP_TOLERANCE`) or both stopped on patience (converged): fixed epochs give the arm with more data
more steps, and the CPU study found that gap to be extra steps. Each comparison says which
(`budget check`), from the rows' `finetune_steps` and `stopped_on_patience`; rows written before
these were recorded say "steps unknown". Rows are paired within one budget mode (fixed epochs, fixed
steps, to convergence: a sweep may run its arms under several), and a sweep file's `comparisons` add
pairs against another baseline than golden-only (`declared_comparisons`).
`plot_paired_differences` draws the per-seed differences, their mean ± std and ± 2 std.

The paper's numbers are passed in (`paper(dataset, k, backbone, variant)`, tkre.report.tables.paper_number)
and printed in columns labelled as the paper's. Input: finished grid/evaluate trials with a test
score, one row per trial, with the columns dataset, k, backbone, seed, variant, test_micro_f1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from tkre.report.plots import pyplot, save_figure

BASELINE = "golden_only"
STEP_TOLERANCE = 0.05  # arms whose fine-tuning steps differ by more than this share (and did not both converge)
#: Table 3's rows, in the paper's order, with the paper's names.
TABLE3 = {"tkre": "TKRE", "no_edkg": "w/o EDKG", "no_scdg": "w/o SCDG", "bert_masking": "w/o MSLM (BERT masking)",
          "no_scl": "w/o SCL", BASELINE: "w/o ALL (golden data only)"}
CELL = ["dataset", "k", "backbone"]
#: Columns that tell apart several settings of one variant in a cell (each is compared with golden-only).
SETTINGS = ["generator", "edkg_generator", "scdg_generator", "synthetic_asked"]
_DATASET_NAMES = {"semeval": "SemEval", "tacred": "TACRED", "tacrev": "TACREV", "retacred": "Re-TACRED"}
PaperLookup = Callable[[str, int, str, str], "float | None"]


def sample_std(values: list[float]) -> float:
    """Sample standard deviation (n - 1) of `values`; NaN below 2."""
    n = len(values)
    if n < 2:
        return math.nan
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def mean_ci95(values: list[float]) -> tuple[float, float] | None:
    """95 % confidence interval of the mean of `values`: mean ± t(0.975, n - 1) · std / √n (None below 2)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    m = sum(values) / n
    half = float(t.ppf(0.975, n - 1)) * sample_std(values) / math.sqrt(n)
    return m - half, m + half


@dataclass
class PairedComparison:
    """One variant against golden-only in one (dataset, K, backbone) cell."""

    dataset: str
    k: int
    backbone: str
    variant: str
    seeds: list[int]  # the paired seeds, sorted
    baseline_f1: list[float]  # golden-only test micro-F1 % per paired seed
    variant_f1: list[float]  # the variant's test micro-F1 % per paired seed
    baseline_only: list[int] = field(default_factory=list)  # golden-only seeds without a variant row
    variant_only: list[int] = field(default_factory=list)  # variant seeds without a golden-only row
    averaged: list[str] = field(default_factory=list)  # "variant seed s (n rows)" for repeated rows
    setting: str = ""  # when a variant ran with several settings in the cell (e.g. generators): which one
    baseline_steps: list[float | None] = field(default_factory=list)  # fine-tuning steps per paired seed
    variant_steps: list[float | None] = field(default_factory=list)
    baseline_converged: list[bool] = field(default_factory=list)  # stopped on patience, per paired seed
    variant_converged: list[bool] = field(default_factory=list)
    baseline: str = BASELINE
    budget_mode: str = "epochs"  # fine-tuning's budget mode in this comparison: epochs, steps or convergence

    @property
    def differences(self) -> list[float]:
        """Variant minus golden-only per paired seed, in percentage points (rounded to 1e-6 so that equal
        gaps computed from different scores are ties for the signed-rank test, not float noise)."""
        return [round(v - b, 6) for v, b in zip(self.variant_f1, self.baseline_f1)]

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return sum(self.differences) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1) of the per-seed differences."""
        return sample_std(self.differences)

    def ci95(self) -> tuple[float, float] | None:
        """95 % confidence interval of the mean difference, t-based over the seeds (None below 2 pairs)."""
        return mean_ci95(self.differences)

    def unequal_steps(self) -> list[int]:
        """Paired seeds whose arms' fine-tuning steps differ by more than STEP_TOLERANCE of the larger
        and that did not both converge (unknown steps are not counted: see `budget_check`)."""
        return [s for s, b, v, cb, cv in zip(self.seeds, self.baseline_steps, self.variant_steps,
                                             self.baseline_converged, self.variant_converged)
                if b is not None and v is not None and abs(v - b) > STEP_TOLERANCE * max(v, b) and not (cb and cv)]

    def budget_check(self) -> str:
        """`equal steps`, `both converged`, `UNEQUAL STEPS ...` (the comparison is confounded) or `steps unknown`."""
        if self.n == 0:
            return ""
        unfair = self.unequal_steps()
        if unfair:
            detail = ", ".join(f"s{s}: {self.variant_steps[i]:.0f} vs {self.baseline_steps[i]:.0f}"
                               for i, s in enumerate(self.seeds) if s in unfair)
            return f"UNEQUAL STEPS (> {STEP_TOLERANCE:.0%}, not both converged): {detail}"
        if any(b is None or v is None for b, v in zip(self.baseline_steps, self.variant_steps)):
            return "steps unknown"
        if all(self.baseline_converged) and all(self.variant_converged):
            return "both converged"
        return "equal steps"

    def wilcoxon_p(self) -> float | None:
        """Two-sided Wilcoxon signed-rank p-value (None below 2 pairs or when every difference is 0)."""
        if self.n < 2 or not any(self.differences):
            return None
        from scipy.stats import wilcoxon

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(wilcoxon(self.differences, alternative="two-sided").pvalue)
        return None if math.isnan(p) else p

    def ttest_p(self) -> float | None:
        """Two-sided paired t-test p-value (None below 2 pairs or with no spread in the differences)."""
        if self.n < 2 or not self.std > 0:
            return None
        from scipy.stats import ttest_rel

        p = float(ttest_rel(self.variant_f1, self.baseline_f1).pvalue)
        return None if math.isnan(p) else p


def _seed_means(g: pd.DataFrame, variant: str, averaged: list[str]) -> dict[int, float]:
    out = {}
    for seed, rows in g.groupby("seed", sort=True):
        if len(rows) > 1:
            averaged.append(f"{variant} seed {int(seed)} ({len(rows)} rows)")
        out[int(seed)] = 100 * float(rows["test_micro_f1"].astype(float).mean())
    return out


def _seed_budget(g: pd.DataFrame) -> dict[int, tuple[float | None, bool]]:
    """seed -> (mean fine-tuning steps or None when a row lacks them, every row stopped on patience)."""
    out = {}
    for seed, rows in g.groupby("seed", sort=True):
        steps = rows["finetune_steps"] if "finetune_steps" in rows else pd.Series([None] * len(rows))
        conv = rows["stopped_on_patience"] if "stopped_on_patience" in rows else pd.Series([None] * len(rows))
        out[int(seed)] = (None if steps.isna().any() else float(steps.astype(float).mean()),
                          bool(conv.notna().all() and conv.astype(bool).all()))
    return out


def _variant_order(names) -> list[str]:
    known = [v for v in TABLE3 if v in names and v != BASELINE]
    return known + sorted(v for v in names if v not in TABLE3)


def budget_mode(budget) -> str:
    """`epochs`, `steps` or `convergence` from a row's `finetune_budget` (rows without one: fixed epochs)."""
    text = "" if budget is None or budget != budget else str(budget)
    return "convergence" if text.startswith("convergence") else "steps" if text.endswith(" steps") else "epochs"


def paired_comparisons(df: pd.DataFrame, baseline: str = BASELINE) -> list[PairedComparison]:
    """Every variant against `baseline`, per (dataset, K, backbone) cell and budget mode that hold both."""
    df = df[df["variant"].notna() & df["test_micro_f1"].notna()]
    df = df.assign(budget_mode=[budget_mode(b) for b in (df["finetune_budget"] if "finetune_budget" in df
                                                         else [None] * len(df))])
    out = []
    for cell, g in df.groupby(CELL + ["budget_mode"], sort=True):
        if baseline not in set(g["variant"]):
            continue
        averaged: list[str] = []
        base = _seed_means(g[g["variant"] == baseline], baseline, averaged)
        base_budget = _seed_budget(g[g["variant"] == baseline])
        for variant in _variant_order(set(g["variant"]) - {baseline}):
            rows = g[g["variant"] == variant]
            varying = [c for c in SETTINGS if c in rows and rows[c].nunique(dropna=False) > 1]
            for setting, v in (rows.groupby(varying, dropna=False, sort=True) if varying else [((), rows)]):
                setting = setting if isinstance(setting, tuple) else (setting,)
                label = ", ".join(f"{c}={x}" for c, x in zip(varying, setting))
                notes = list(averaged)
                other = _seed_means(v, f"{variant} [{label}]" if label else variant, notes)
                seeds = sorted(set(base) & set(other))
                budget = _seed_budget(v)
                out.append(PairedComparison(
                    str(cell[0]), int(cell[1]), str(cell[2]), variant, seeds, [base[s] for s in seeds],
                    [other[s] for s in seeds], sorted(set(base) - set(other)), sorted(set(other) - set(base)),
                    notes, label, [base_budget[s][0] for s in seeds], [budget[s][0] for s in seeds],
                    [base_budget[s][1] for s in seeds], [budget[s][1] for s in seeds], baseline, str(cell[3])))
    return out


def declared_comparisons(df: pd.DataFrame, pairs: list) -> list[PairedComparison]:
    """The (variant, baseline) pairs a sweep file declares under `comparisons`, paired like golden-only's."""
    out = []
    for variant, baseline in pairs:
        out += [c for c in paired_comparisons(df[df["variant"].isin([variant, baseline])], baseline)
                if c.variant == variant]
    return out


def _name(variant: str) -> str:
    return "golden-only" if variant == BASELINE else TABLE3.get(variant, variant)


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def comparisons_table(comparisons: list[PairedComparison], paper: PaperLookup | None = None) -> pd.DataFrame:
    """One row per comparison: per-seed differences, mean ± std, p-values, unpaired seeds, the paper's gap."""
    rows = []
    for c in comparisons:
        gap = None
        if paper is not None:
            mine, base = paper(c.dataset, c.k, c.backbone, c.variant), paper(c.dataset, c.k, c.backbone, c.baseline)
            gap = None if mine is None or base is None else mine - base
        unpaired = "; ".join(s for s in (
            f"{c.baseline} only: {', '.join(map(str, c.baseline_only))}" if c.baseline_only else "",
            f"{c.variant} only: {', '.join(map(str, c.variant_only))}" if c.variant_only else "") if s)
        rows.append({
            "dataset": c.dataset, "k": c.k, "backbone": c.backbone,
            "variant - golden_only": f"{_name(c.variant)}{f' [{c.setting}]' if c.setting else ''} - {_name(c.baseline)}"
                                     + {"epochs": "", "steps": " (fixed steps)", "convergence": " (to convergence)"}[
                                         c.budget_mode], "pairs": c.n,
            "per-seed Δ (pp)": ", ".join(f"s{s}: {d:+.1f}" for s, d in zip(c.seeds, c.differences)),
            "mean Δ": _num(c.mean, "+.2f"), "std Δ": _num(c.std, ".2f"),
            "95 % CI": "" if (ci := c.ci95()) is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]",
            "mean > 2 std": "" if c.n < 2 or not c.std > 0 else ("yes" if c.mean > 2 * c.std else "no"),
            "Wilcoxon p": _num(c.wilcoxon_p(), ".3f"), "paired t p": _num(c.ttest_p(), ".3f"),
            "unpaired seeds": unpaired or "none", "budget check": c.budget_check(),
            "paper Δ (paper's numbers)": _num(gap, "+.1f")})
    return pd.DataFrame(rows)


def table3(df: pd.DataFrame, paper: PaperLookup | None = None) -> dict[str, pd.DataFrame]:
    """Per backbone: Table 3's rows (TKRE, ablations, golden-only) x the measured (dataset, K) columns,
    ours as mean ± std (seeds) beside the paper's number, and both averages over those columns."""
    df = df[df["variant"].isin(list(TABLE3)) & df["test_micro_f1"].notna()]
    out = {}
    for backbone, g in df.groupby("backbone", sort=True):
        cols = sorted({(str(d), int(k)) for d, k in zip(g["dataset"], g["k"])},
                      key=lambda c: (list(_DATASET_NAMES).index(c[0]) if c[0] in _DATASET_NAMES else 99, c))
        rows = []
        for variant, label in TABLE3.items():
            v = g[g["variant"] == variant]
            if v.empty:
                continue
            row, ours, theirs = {"variant": label}, [], []
            for dataset, k in cols:
                f1 = 100 * v[(v["dataset"] == dataset) & (v["k"] == k)]["test_micro_f1"].astype(float)
                name = f"{_DATASET_NAMES.get(dataset, dataset)} K={k}"
                std = f1.std()
                row[name] = "" if f1.empty else (f"{f1.mean():.1f}" if len(f1) < 2 else
                                                 f"{f1.mean():.1f} ± {std:.1f} ({len(f1)})")
                p = paper(dataset, k, str(backbone), variant) if paper else None
                row[f"{name} paper"] = _num(p)
                ours.append(f1.mean() if not f1.empty else None)
                theirs.append(p)
            row["avg"] = _num(sum(ours) / len(ours)) if None not in ours else ""
            row["avg paper"] = _num(sum(theirs) / len(theirs)) if None not in theirs else ""
            rows.append(row)
        out[str(backbone)] = pd.DataFrame(rows)
    return out


def plot_paired_differences(comparisons: list[PairedComparison], out: Path) -> Path:
    """One panel per (dataset, K, backbone) cell: each variant's per-seed differences with golden-only
    (dots, labelled by seed), their mean ± one std (bar) and mean ± two std (thin line: the issue-16 aim
    is a mean above twice the std, i.e. the thin line clear of zero)."""
    plt = pyplot()
    cells = sorted({(c.dataset, c.k, c.backbone) for c in comparisons})
    fig, axes = plt.subplots(1, len(cells), figsize=(6.5 * len(cells), 3.8), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        mine = [c for c in comparisons if (c.dataset, c.k, c.backbone) == cell and c.n]
        for x, c in enumerate(mine):
            offsets = [0.25 * (i / max(1, c.n - 1) - 0.5) for i in range(c.n)]
            ax.scatter([x + o for o in offsets], c.differences, s=16, color="tab:blue", zorder=3)
            for o, seed, d in zip(offsets, c.seeds, c.differences):
                ax.annotate(str(seed), (x + o, d), textcoords="offset points", xytext=(3, 2), fontsize=6)
            if c.n >= 2:
                ax.errorbar([x + 0.3], [c.mean], yerr=[2 * c.std], color="tab:gray", lw=0.8, capsize=2)
                ax.errorbar([x + 0.3], [c.mean], yerr=[c.std], color="tab:red", lw=2.5, marker="D", ms=4)
        ax.axhline(0, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([TABLE3.get(c.variant, c.variant) + (f"\n[{c.setting}]" if c.setting else "")
                            for c in mine], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("Δ test micro-F1 vs golden-only (pp)")
        ax.set_title(f"{_DATASET_NAMES.get(cell[0], cell[0])} K={cell[1]} {cell[2]}: per seed, mean ± std (± 2 std)",
                     fontsize=9)
    return save_figure(fig, out)


def paired_section(df: pd.DataFrame, paper: PaperLookup | None = None,
                   comparisons: list[PairedComparison] | None = None) -> list[str]:
    """Markdown lines of the report's paired section ([] when no cell holds golden-only and another variant).
    `comparisons`: `paired_comparisons(df)` when the caller already has it (the report also plots them)."""
    comparisons = paired_comparisons(df) if comparisons is None else comparisons
    if not comparisons:
        return []
    lines = ["## Paired comparison with golden-only", "",
             "Each variant minus golden-only on the same K-shot split, test micro-F1 in percentage points, paired "
             "by (dataset, K, backbone, seed). Wilcoxon: scipy's two-sided signed-rank test (exact for small n "
             "without ties: with n pairs its p-value is at least 2 / 2^n, 0.0625 for 5 seeds); paired t: scipy's "
             "two-sided paired t-test. `mean > 2 std`: the mean difference exceeds twice the standard deviation "
             "of the per-seed differences; `95 % CI`: Student's t interval of the mean difference over the seeds (a "
             "CI that holds 0 means no detectable difference). `budget check`: whether both arms fine-tuned for "
             f"the same optimizer steps (within {STEP_TOLERANCE:.0%}) or both converged. `paper Δ` is the paper's "
             "own gap (its numbers, RoBERTa-large).", "",
             comparisons_table(comparisons, paper).to_markdown(index=False, disable_numparse=True), ""]
    unfair = [c for c in comparisons if c.unequal_steps()]
    if unfair:
        lines += [f"**Unequal fine-tuning budgets**: {len(unfair)} comparison(s) above pit arms whose optimizer steps "
                  f"differ by more than {STEP_TOLERANCE:.0%} without both converging, so their difference may be "
                  "extra steps rather than the variant: " + "; ".join(
                      f"{TABLE3.get(c.variant, c.variant)} (seeds {', '.join(map(str, c.unequal_steps()))})"
                      for c in unfair) + ". Give both the same `finetune.budget` in steps, or train both to "
                  "convergence.", ""]
    averaged = sorted({a for c in comparisons for a in c.averaged})
    if averaged:
        lines += ["Several rows for one seed were averaged: " + "; ".join(averaged) + ".", ""]
    tables = table3(df, paper)
    if any(set(t["variant"]) - {TABLE3["tkre"], TABLE3[BASELINE]} for t in tables.values()):
        for backbone, t in tables.items():
            lines += [f"### Ablations laid out as the paper's Table 3 ({backbone})", "",
                      "Ours: test micro-F1 %, mean ± std (seeds); `paper` columns: the paper's numbers "
                      "(RoBERTa-large, Llama-2-13B-chat), not measured here.", "",
                      t.to_markdown(index=False, disable_numparse=True), ""]
    return lines

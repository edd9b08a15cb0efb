"""Generator comparison: one table per role (EDKG, SCDG) with one row per generator setting, the
acceptance per relation and the reject reasons side by side, and plots (issue 15 item 2).

Reads the results table (one row per trial). A trial's generation statistics travel in its row as
`edkg.<stat>` / `scdg.<stat>` columns (written by the pipeline from each stage's summary, see
`tkre.generate.stats`); the report never opens configs or artifacts. A *setting* is the sweep's
variant name (else the generator's name). The statistics belong to a generation artifact, not to a
trial: trials that share an artifact (a seed sweep over fine-tuning) count it once, so several
artifacts of one setting (several seeds) are summed, and rates are ratios of the sums.

Columns (tokens and cost are the whole data set's, cached rows included; tokens/s counts only rows
generated in that run):
- both roles: prompts, input/output tokens, tokens/s, wall s, cost USD (None = unknown price);
- EDKG: explanations written, mean explanation length (words), distinct-2 of the explanations;
- SCDG: asked, samples found, parsed, valid, kept, acceptance = kept / asked, distinct-2 of the kept
  contexts, golden overlap (the highest word-3-gram overlap of a kept sample with any one golden
  example, mean over samples; lower = more novel);
  constrained settings also: unconstrained (rows the server answered without the schema: the free-text
  fallback) and the structured-output dialect the rows went out in (openai backend: json_schema,
  json_object+schema, structured_outputs, guided_json, format, text; with counts when several);
- when trials fine-tuned: dev and test micro-F1 (%) mean ± std over the setting's trials.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tkre.report.plots import pyplot, save_figure

ROLES = ("edkg", "scdg")
_SUM = ("prompts", "input_tokens", "output_tokens", "fresh_output_tokens", "generation_seconds", "seconds",
        "asked", "samples", "parsed", "valid", "kept", "explanations", "unconstrained")


@dataclass
class GeneratorReport:
    markdown: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


def setting_name(row: pd.Series) -> str:
    v = row.get("variant")
    if v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v):
        return str(v)
    for col in ("scdg.generator", "edkg.generator", "scdg_generator", "edkg_generator", "generator"):
        g = row.get(col)
        if isinstance(g, str) and g and g != "none":
            return g
    return "unknown"


def _has_role(df: pd.DataFrame, role: str) -> bool:
    return f"{role}.output_tokens" in df and df[f"{role}.output_tokens"].notna().any()


def _role_runs(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """One row per (setting, generation artifact) that has this role's statistics."""
    runs = df[df[f"{role}.output_tokens"].notna()].copy()
    runs["setting"] = runs.apply(setting_name, axis=1)
    key = f"artifact.{role}"
    if key in runs and runs[key].notna().all():
        runs = runs.drop_duplicates(subset=["setting", key])
    return runs


def _num(s: pd.Series) -> float:
    return float(pd.to_numeric(s, errors="coerce").fillna(0).sum())


def _ratio(a: float, b: float, digits: int = 3) -> float | None:
    return round(a / b, digits) if b else None


def _mean(s: pd.Series, digits: int = 4) -> float | None:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return round(float(v.mean()), digits) if len(v) else None


def _dialects(col: pd.Series) -> str:
    """How constrained rows reached the server, summed over runs: 'json_schema' or 'json_object+schema 4, text 2'."""
    total: Counter = Counter()
    for value in col.dropna():
        total.update(json.loads(value) if isinstance(value, str) else value)
    if len(total) == 1:
        return next(iter(total))
    return ", ".join(f"{d} {n}" for d, n in total.most_common())


def _cost(g: pd.DataFrame, role: str) -> float | None:
    col = f"{role}.cost_usd"
    if col not in g:
        return None
    v = pd.to_numeric(g[col], errors="coerce")
    return None if v.isna().any() else round(float(v.sum()), 4)


def _f1(trials: pd.DataFrame, col: str) -> str:
    if col not in trials:
        return ""
    v = 100 * pd.to_numeric(trials[col], errors="coerce").dropna()
    if v.empty:
        return ""
    return f"{v.mean():.1f}" if len(v) < 2 else f"{v.mean():.1f} ± {v.std():.1f}"


def role_table(df: pd.DataFrame, role: str) -> pd.DataFrame:
    """One row per generator setting for `role` (edkg or scdg); empty when no trial has its stats."""
    if not _has_role(df, role):
        return pd.DataFrame()
    trials = df.copy()
    trials["setting"] = trials.apply(setting_name, axis=1)
    rows = []
    for setting, g in _role_runs(df, role).groupby("setting", sort=False):
        s = {k: _num(g[f"{role}.{k}"]) for k in _SUM if f"{role}.{k}" in g}
        gen_col = f"{role}.generator"
        row: dict = {"setting": setting, "generator": str(g[gen_col].iloc[0]) if gen_col in g else "",
                     "runs": len(g), "prompts": int(s.get("prompts", 0))}
        if role == "scdg":
            row.update({"asked": int(s.get("asked", 0)), "parsed": int(s.get("parsed", 0)),
                        "kept": int(s.get("kept", 0)),
                        "acceptance": _ratio(s.get("kept", 0), s.get("asked", 0)),
                        "distinct-2": _mean(g.get(f"{role}.distinct_2", pd.Series(dtype=float))),
                        "golden overlap": _mean(g.get(f"{role}.golden_overlap_mean", pd.Series(dtype=float)))})
            if f"{role}.constrained" in g:
                row["constrained"] = bool(g[f"{role}.constrained"].fillna(False).astype(bool).any())
            if f"{role}.unconstrained" in g:  # constrained rows answered as free text (the fallback)
                row["unconstrained"] = int(s.get("unconstrained", 0))
            if f"{role}.dialects_json" in g:
                row["dialect"] = _dialects(g[f"{role}.dialects_json"])
        else:
            row.update({"explanations": int(s.get("explanations", 0)),
                        "words / explanation": _mean(g.get(f"{role}.explanation_words_mean",
                                                           pd.Series(dtype=float)), 1),
                        "distinct-2": _mean(g.get(f"{role}.distinct_2", pd.Series(dtype=float)))})
        row.update({"input tokens": int(s.get("input_tokens", 0)), "output tokens": int(s.get("output_tokens", 0)),
                    "tokens/s": _ratio(s.get("fresh_output_tokens", 0), s.get("generation_seconds", 0), 1),
                    "wall s": round(s.get("seconds", 0.0), 1), "cost USD": _cost(g, role)})
        mine = trials[trials["setting"] == setting]
        if "status" in mine:
            mine = mine[mine["status"] == "ok"]
        row["dev micro-F1 %"] = _f1(mine, "dev_micro_f1")
        row["test micro-F1 %"] = _f1(mine, "test_micro_f1")
        rows.append(row)
    table = pd.DataFrame(rows)
    if not (table["dev micro-F1 %"].astype(bool).any() or table["test micro-F1 %"].astype(bool).any()):
        table = table.drop(columns=["dev micro-F1 %", "test micro-F1 %"])
    return table


def _json_counts(g: pd.DataFrame, col: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for value in g[col].dropna() if col in g else []:
        for k, v in (json.loads(value) if isinstance(value, str) else value).items():
            out.setdefault(k, Counter()).update(v if isinstance(v, dict) else {"n": v})
    return out


def _per_setting(df: pd.DataFrame, col: str, cell) -> dict[str, dict[str, object]]:
    """SCDG setting -> {key of the JSON counts in `col` -> cell(its summed counts)}: one table column each."""
    return {setting: {k: cell(c) for k, c in _json_counts(g, col).items()}
            for setting, g in _role_runs(df, "scdg").groupby("setting", sort=False)}


def acceptance_table(df: pd.DataFrame) -> pd.DataFrame:
    """Relations x settings: kept / asked per relation (SCDG)."""
    if not _has_role(df, "scdg"):
        return pd.DataFrame()
    table = pd.DataFrame(_per_setting(df, "scdg.acceptance_json",
                                      lambda c: f"{c['kept']}/{c['asked']}" if c.get("asked") else ""))
    table.index.name = "relation"
    return table.sort_index().fillna("").reset_index()


def reasons_table(df: pd.DataFrame) -> pd.DataFrame:
    """Reject reasons x settings: counts (SCDG), most frequent first."""
    if not _has_role(df, "scdg"):
        return pd.DataFrame()
    table = pd.DataFrame(_per_setting(df, "scdg.reasons_json", lambda c: int(c["n"]))).fillna(0).astype(int)
    if table.empty:
        return pd.DataFrame()
    table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    table.index.name = "reason"
    return table.reset_index()


# ------------------------------------------------------------------------------------- plots
def _scatter(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, title: str, out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, x, y in points:
        ax.scatter([x], [y], s=50)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(0.25)
    return save_figure(fig, out)


def plot_acceptance_vs_cost(scdg: pd.DataFrame, out: Path) -> Path | None:
    """Acceptance against cost; when every setting is free (local models), against SCDG tokens instead."""
    rows = [r for _, r in scdg.iterrows() if r["acceptance"] is not None and not pd.isna(r["acceptance"])]
    priced = [r for r in rows if r["cost USD"] is not None and not pd.isna(r["cost USD"])]
    if priced and any(float(r["cost USD"]) > 0 for r in priced):
        return _scatter([(r["setting"], float(r["cost USD"]), float(r["acceptance"])) for r in priced],
                        "SCDG cost (USD)", "acceptance (kept / asked)", "SCDG acceptance vs cost", out)
    if not rows:
        return None
    return _scatter([(r["setting"], float(r["input tokens"] + r["output tokens"]), float(r["acceptance"]))
                     for r in rows], "SCDG tokens (input + output)", "acceptance (kept / asked)",
                    "SCDG acceptance vs tokens (every setting local: cost 0)", out)


def plot_f1_vs_tokens(role_tables: dict[str, pd.DataFrame], out: Path) -> Path | None:
    pts = []
    for role, t in role_tables.items():
        if t.empty or "test micro-F1 %" not in t:
            continue
        for _, r in t.iterrows():
            if r["test micro-F1 %"]:
                pts.append((r["setting"], role, r["input tokens"] + r["output tokens"],
                            float(str(r["test micro-F1 %"]).split(" ")[0])))
    totals: dict[str, list] = {}
    for name, _, tokens, f1 in pts:
        totals.setdefault(name, [0, f1])[0] += tokens
    if not totals:
        return None
    return _scatter([(n, t, f) for n, (t, f) in totals.items()], "generation tokens (EDKG + SCDG, in + out)",
                    "test micro-F1 (%)", "F1 vs generation tokens", out)


def plot_outcomes(scdg: pd.DataFrame, reasons: pd.DataFrame, out: Path) -> Path | None:
    """Stacked bars: what became of the samples asked per setting (kept, each reject reason)."""
    if scdg.empty:
        return None
    plt = pyplot()
    settings = list(scdg["setting"])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bottom = [0.0] * len(settings)
    kept = [float(v) for v in scdg["kept"]]
    ax.bar(settings, kept, label="kept", color="tab:green")
    bottom = kept[:]
    if not reasons.empty:
        colours = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
                   "tab:olive", "tab:cyan", "navy", "gold", "black"]  # green is "kept"
        for i, (_, r) in enumerate(reasons.iterrows()):
            vals = [float(r.get(s, 0)) for s in settings]
            if sum(vals) == 0:
                continue
            ax.bar(settings, vals, bottom=bottom, label=str(r["reason"]), color=colours[i % len(colours)])
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("SCDG samples")
    ax.set_title("What became of the SCDG samples (kept, reject reasons)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    return save_figure(fig, out)


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt="g", missingval="")


def generator_report(df: pd.DataFrame, out_dir: str | Path) -> GeneratorReport | None:
    """Tables and plots comparing generator settings, or None when no trial has generation statistics."""
    tables = {role: role_table(df, role) for role in ROLES}
    if all(t.empty for t in tables.values()):
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables["acceptance"], tables["reasons"] = acceptance_table(df), reasons_table(df)
    parts = ["## Generators", "",
             "One row per generator setting. Tokens and cost cover the whole generated set (cached rows "
             "included); tokens/s counts the rows generated in that run. Acceptance = kept / asked; golden "
             "overlap = the highest word-3-gram overlap of a kept sample with any one golden example (mean; "
             "lower = more novel); cost from the generator's `price_per_m_input_tokens` / "
             "`price_per_m_output_tokens` (0 for local models; empty = unknown).", ""]
    for role, title in (("scdg", "SCDG (synthetic samples)"), ("edkg", "EDKG (explanations)")):
        if not tables[role].empty:
            parts += [f"### {title}", "", _markdown(tables[role]), ""]
    if not tables["acceptance"].empty:
        parts += ["### SCDG acceptance per relation (kept / asked)", "", _markdown(tables["acceptance"]), ""]
    if not tables["reasons"].empty:
        parts += ["### SCDG reject reasons", "", _markdown(tables["reasons"]), ""]
    plots = [p for p in (
        plot_outcomes(tables["scdg"], tables["reasons"], out_dir / "scdg_outcomes.png"),
        plot_acceptance_vs_cost(tables["scdg"], out_dir / "acceptance_vs_cost.png") if not tables["scdg"].empty
        else None,
        plot_f1_vs_tokens({r: tables[r] for r in ROLES}, out_dir / "f1_vs_tokens.png")) if p is not None]
    return GeneratorReport("\n".join(parts), tables, plots)

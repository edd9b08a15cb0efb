"""A sweep's phases and what Tune hands back from each: the grid (or one search phase per fixed point,
then the evaluation of the best configs), whether a phase ran all its trials, its trials as flat result
rows, and the best search points to evaluate. Pure functions of the sweep and Tune's results, apart from
the Ray driver in `tkre.sweep.run`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from tkre.errors import error_reason
from tkre.results import FINISHED, ResultRow, TrialRow
from tkre.sweep.config import SweepConfig, grid_points, trial_meta, trial_overrides

log = logging.getLogger(__name__)


@dataclass
class Phase:
    name: str
    kind: str  # grid | search | evaluate
    points: list[dict[str, Any]]  # grid/evaluate: one per trial; search: the fixed part (one)


def plan_phases(sweep: SweepConfig) -> list[Phase]:
    points = grid_points(sweep)
    if sweep.search is None:
        return [Phase("grid", "grid", points)]
    phases = [Phase(f"search-{i:03d}", "search", [p]) for i, p in enumerate(points)]
    if sweep.evaluate is not None:
        phases.append(Phase("evaluate", "evaluate", []))  # points filled from the search results
    return phases


def phase_complete(phase: Phase, trials: int) -> bool:
    """Whether a phase that Tune returned from ran all its trials. A grid or evaluate phase knows its
    points; Tune creates their trials as they start, so an interrupted phase (Ctrl-C: Tune stops its
    trials and returns normally) has fewer -- it must not be marked done, or `--resume` would skip
    it. A search phase ends on its own terms (its sampler, ASHA, the time budget)."""
    return phase.kind == "search" or trials >= len(phase.points)


def phase_rows(result_grid, phase: Phase, sweep: SweepConfig) -> list[dict]:
    """One flat TrialRow per trial: the sweep's fields around the pipeline's whole ResultRow."""
    rows = []
    for r in result_grid:
        m = dict(r.metrics or {})
        overrides = trial_overrides(r.config or {})
        if r.error is not None:
            status, error = "error", error_reason(r.error)  # one line; traceback in error.txt
        else:
            status, error = ("ok" if m.get(FINISHED) else "early_stopped"), None
        row = TrialRow(
            sweep=sweep.name, phase=phase.name, trial_id=str(m.get("trial_id") or (r.path or "").rsplit("/", 1)[-1]),
            variant=overrides.get("variant"), status=status, error=error,
            selected_from=trial_meta(r.config or {}).get("selected_from"),
            overrides=json.dumps(overrides, sort_keys=True, default=str),
            param={k: overrides.get(k) for k in sweep.search.space} if phase.kind == "search" else {},
            training_iteration=m.get("training_iteration"), last_dev_micro_f1=m.get("dev_micro_f1"),
            result=ResultRow.from_flat(m) if status == "ok" else None)
        rows.append(row.to_flat())
    return rows


def best_points(rows: list[dict], sweep: SweepConfig, phases: list[Phase]) -> list[dict]:
    """For every search phase, its best trial's overrides by the dev metric, times the eval seeds
    (each point names the trial it came from in `selected_from`, a row field, not an override)."""
    s = sweep.search
    points = []
    for phase in (p for p in phases if p.kind == "search"):
        cand = [r for r in rows if r["phase"] == phase.name and r["status"] == "ok" and r.get(s.metric) is not None]
        if not cand:
            log.warning("phase %s: no finished trial, nothing to evaluate", phase.name)
            continue
        best = (max if s.mode == "max" else min)(cand, key=lambda r: r[s.metric])
        over = json.loads(best["overrides"])
        for seed in sweep.evaluate.seeds:
            points.append({**over, "data.seed": seed, "selected_from": best["trial_id"]})
    return points

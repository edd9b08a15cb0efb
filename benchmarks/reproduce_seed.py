"""Rerun one seed of a finished grid sweep from a clean storage directory; compare with the committed rows.

Issue 16's check: re-running one seed of golden-only and of the chosen TKRE from a clean storage
directory must give the committed test micro-F1 of that seed exactly.

    python benchmarks/reproduce_seed.py cpu_semeval --seed 1 --variants golden_only tkre \\
        --results results/cpu_semeval/results.csv

Each trial is the sweep's own experiment (tkre.sweep.plan.plan_trials: the same resolved config the
sweep ran), with storage_path moved to a new, empty directory, so nothing stored is reused: not the
K-shot split, the explanations, the synthetic samples, the generation cache nor any checkpoint. The
trials run one after the other through tkre.pipeline.run_experiment (Ray Train on a local Ray, as in
the sweep; each training worker runs one torch thread either way, from its 0.95-CPU share).

Last line: one JSON object: seed, `<variant>_rerun` and `<variant>_committed` (test micro-F1,
fractions), `<variant>_seconds`, and `exact` (every rerun equals its committed value, bit for bit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tkre.pipeline import run_experiment
from tkre.sweep.config import load_sweep, resolve_sweep_file
from tkre.sweep.plan import plan_trials


def committed_f1(results: Path, variant: str, seed: int) -> float:
    df = pd.read_csv(results) if results.suffix == ".csv" else pd.read_parquet(results)
    rows = df[(df["variant"] == variant) & (df["seed"] == seed) & (df["status"] == "ok")]
    if len(rows) != 1:
        raise SystemExit(f"{results}: expected one ok row for variant={variant} seed={seed}, found {len(rows)}")
    return float(rows["test_micro_f1"].iloc[0])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep file or shipped sweep name (a grid sweep with variants)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=["golden_only", "tkre"])
    ap.add_argument("--results", type=Path, required=True, help="the committed results (csv or parquet)")
    ap.add_argument("--storage", type=Path, help="a new or empty directory (default: a fresh temporary one)")
    args = ap.parse_args(argv)

    storage = args.storage or Path(tempfile.mkdtemp(prefix="tkre_reproduce_"))
    if storage.exists() and any(storage.iterdir()):
        raise SystemExit(f"{storage}: not empty; the rerun must start from a clean storage directory")
    sweep = load_sweep(resolve_sweep_file(args.sweep))
    trials = {t.variant: t for t in plan_trials(sweep)
              if t.phase == "grid" and t.variant in args.variants and t.experiment.data.seed == args.seed}
    missing = [v for v in args.variants if v not in trials]
    if missing:
        raise SystemExit(f"{args.sweep}: no grid trial for seed {args.seed} and variant(s) {', '.join(missing)}")
    expected = {v: committed_f1(args.results, v, args.seed) for v in args.variants}  # fail before hours of work

    figures: dict = {"seed": args.seed, "storage": str(storage)}
    for variant in args.variants:
        cfg = trials[variant].experiment.model_copy(update={"storage_path": str(storage)})
        t0 = time.perf_counter()
        row = run_experiment(cfg, variant=variant)
        figures[f"{variant}_seconds"] = round(time.perf_counter() - t0, 1)
        figures[f"{variant}_rerun"] = row.test_micro_f1
        figures[f"{variant}_committed"] = expected[variant]
        print(f"{variant} seed {args.seed}: rerun {row.test_micro_f1!r}, committed {expected[variant]!r}",
              file=sys.stderr, flush=True)
    figures["exact"] = all(figures[f"{v}_rerun"] == figures[f"{v}_committed"] for v in args.variants)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()

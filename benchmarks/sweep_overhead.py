"""Sweep overhead: the fraction of sweep wall time spent outside the trials' own work.

Runs a real sweep (golden-only pipeline trials: K-shot split + Ray Train fine-tuning + test
evaluation, with a tiny BERT and a small JSONL dataset cut from SemEval) with one trial at a time and
compares, side by side in one run:
  sweep wall time (from `run_sweep` call to results written, incl. starting Ray)   vs
  sum over trials of the pipeline's own wall time (`seconds.total` in each results row).
overhead_fraction = 1 - sum(trial work) / sweep wall time   (scheduling, trial actor start-up,
artifact lookups outside stages, result/experiment-state writes, logging). Target < 0.10.
overhead_s_per_trial = (wall - work) / trials, split in two: start_s, from the call to the first
trial's start (the sweep's `events.jsonl`: Ray's start, Tune's first trial actor), paid once per
sweep; and after_start_s_per_trial, the rest per trial (between trials, around each pipeline, the end).

    python benchmarks/sweep_overhead.py [--trials 3] [--epochs 1]

Last stdout line: one JSON object with overhead_fraction and the measured seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ADDRESS", "local")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()

    from sweep_helpers import golden_only_base, read_events, write_mini_dataset, write_sweep
    from tiny_models import make_tiny_encoder
    from tkre.data import load_dataset
    from tkre.sweep.run import run_sweep

    root = Path(tempfile.mkdtemp(prefix="tkre-sweep-overhead-"))
    data = write_mini_dataset(load_dataset("semeval"), root / "data")
    enc = make_tiny_encoder(root / "enc")
    sweep = {"name": "overhead", "base": golden_only_base(data, enc, root / "store", epochs=args.epochs),
             "grid": {"data.seed": list(range(1, args.trials + 1))},
             "resources": {"max_concurrent_trials": 1}, "min_free_gb": 0}
    path = write_sweep(root / "overhead.yaml", sweep)
    t0, t0_epoch = time.perf_counter(), time.time()
    out = run_sweep(path)
    wall = time.perf_counter() - t0
    start = min(e["time"] for e in read_events(out.sweep_dir) if e["event"] == "start") - t0_epoch
    rows = out.rows
    work = float(rows["seconds.total"].sum())
    stage_cols = [c for c in rows.columns if c.startswith("seconds.") and c != "seconds.total"]
    for _, r in rows.iterrows():
        print(f"trial {r['trial_id']} seed {r['seed']}: {r['status']}, pipeline {r['seconds.total']:.1f}s "
              + " ".join(f"{c[8:]}={r[c]:.1f}s" for c in stage_cols if r[c] == r[c]))
    overhead = 1 - work / wall
    print(f"sweep wall {wall:.1f}s, trials' own work {work:.1f}s over {len(rows)} trials "
          f"-> overhead {100 * overhead:.1f}% (target < 10%); first trial started after {start:.2f}s")
    print(json.dumps({"overhead_fraction": round(overhead, 4), "sweep_wall_s": round(wall, 2),
                      "trial_work_s": round(work, 2), "trials": int(len(rows)),
                      "overhead_s_per_trial": round((wall - work) / max(1, len(rows)), 2),
                      "start_s": round(start, 2),
                      "after_start_s_per_trial": round((wall - work - start) / max(1, len(rows)), 2),
                      "ok_trials": int((rows["status"] == "ok").sum()), "epochs": args.epochs,
                      "machine": "2-core CPU sandbox, no GPU"}))


if __name__ == "__main__":
    main()

"""W&B logging of a sweep (tkre.sweep.wandb_log, tkre.sweep.tracking): job types, tags, pre-training and
fine-tuning curves, the results table and report as Tables/Artifacts, one summary run per sweep -- checked
on the files W&B writes offline (tests/wandb_offline.py reads them). wandb runs in a fresh process with
its own HOME (wandb keeps global state; a key or login of the user must not matter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from wandb_offline import read_run
from tkre.results import ResultRow, SweepDir, TrialRow
from tkre.sweep.wandb_log import Worker, run_tags

INHERITED = ("PATH", "PYTHONPATH", "LANG", "LC_ALL")
EPOCHS = [{"epoch": 0, "train_loss": 2.0, "dev_micro_f1": 0.2}, {"epoch": 1, "train_loss": 1.5, "dev_micro_f1": 0.4}]
PRETRAIN = {"stage1": [{"epoch": 0, "train_loss": 6.0, "heldout_mslm_loss": 5.5},
                       {"epoch": 1, "train_loss": 5.0, "heldout_mslm_loss": 5.0}],
            "stage2": [{"epoch": 0, "train_loss": 3.0, "heldout_scl_loss": 2.5}]}


def row(variant: str, seed: int, trial_id: str) -> dict:
    on = variant != "golden_only"
    res = ResultRow(experiment=f"demo-{variant}", variant=variant, dataset="semeval", data_hash="0" * 16, k=8,
                    seed=seed, protocol="knowprompt", backbone="typ_marker", encoder="embedded:minilm",
                    edkg_generator="hf:embedded:smollm2" if on else None,
                    scdg_generator="hf:embedded:smollm2" if on else None, relations=18, dev_micro_f1=0.4,
                    test_micro_f1=0.5 + seed / 100, best_epoch=1, experiment_config="{}",
                    epoch_history=json.dumps(EPOCHS), pretrain_history=json.dumps(PRETRAIN if on else {}),
                    seconds={"total": 1.0})
    return TrialRow(sweep="demo", phase="grid", trial_id=trial_id, variant=variant, status="ok",
                    result=res).to_flat()


def run_offline(tmp_path: Path, script: str, **extra_env: str) -> dict:
    """Run `script` with W&B offline in an empty HOME; returns the JSON it prints on a RESULT line."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"), HF_HUB_OFFLINE="1", WANDB_MODE="offline",
               MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]),
                                                             os.environ.get("PYTHONPATH", "")]), **extra_env)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=home, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def offline_runs(directory: Path) -> dict[str, dict]:
    """Every offline run under `directory`, by job type + name, once W&B finished writing it."""
    dirs = sorted((directory / "wandb").glob("offline-run-*"))
    assert dirs, f"W&B wrote no offline run under {directory}"
    runs = {}
    for d in dirs:
        for _ in range(60):  # W&B's core process may still be flushing the file when the script returns
            run = read_run(d) if any(p.stat().st_size for p in d.glob("*.wandb")) else None
            if run and run["exited"]:
                break
            time.sleep(0.5)
        assert run and run["exited"], f"{d}: the run never finished"
        runs[run["id"]] = run
    return runs


def media(values: dict, key: str) -> dict:
    """A logged Table or Image: W&B records its fields as nested keys (`<key>/_type`, `<key>/path`, ...)."""
    return {k[len(key) + 1:]: v for k, v in values.items() if k.startswith(key + "/")}


def test_worker_runs_calls_in_order_and_goes_on_after_a_failure(caplog):
    seen, worker = [], Worker()
    worker.submit(seen.append, 1)
    worker.submit(lambda: 1 / 0)
    worker.submit(seen.append, 2)
    assert worker.drain(timeout=30) and seen == [1, 2]
    assert "W&B" in caplog.text and "division by zero" in caplog.text
    gate = threading.Event()
    worker.submit(gate.wait)  # a slow call: submitting behind it does not wait
    t0 = time.perf_counter()
    worker.submit(seen.append, 3)
    assert time.perf_counter() - t0 < 0.1 and not worker.drain(timeout=0.2)
    gate.set()
    assert worker.drain(timeout=30) and seen == [1, 2, 3]


def test_tags_name_variant_dataset_k_seed_backbone_and_generator():
    assert run_tags(row("tkre", 2, "t")) == ["variant:tkre", "dataset:semeval", "K:8", "seed:2",
                                             "backbone:typ_marker", "generator:hf:embedded:smollm2"]
    assert run_tags({"variant": "golden_only", "k": 8.0, "seed": float("nan")}) == ["variant:golden_only", "K:8"]


SUMMARY = """
import json, os
from tkre.sweep.wandb_log import log_sweep_summary
from tkre.results import SweepDir
sdir = SweepDir(os.environ["SWEEP_DIR"])
log_sweep_summary(project="p", group="demo", directory=os.environ["HOME"], mode="offline",
                  rows=sdir.read_results(), sweep_dir=os.environ["SWEEP_DIR"])
print("RESULT {}")
"""


def test_summary_run_carries_the_results_table_and_report_offline(tmp_path):
    sweep = tmp_path / "sweep"
    SweepDir(sweep).write_results([row("golden_only", 1, "g1"), row("tkre", 1, "t1"), row("tkre", 2, "t2")])
    run_offline(tmp_path, SUMMARY, SWEEP_DIR=str(sweep))
    [run] = offline_runs(tmp_path / "home").values()
    assert run["job_type"] == "summary" and run["group"] == "demo" and "summary" in run["tags"]
    assert run["summary"]["trials"] == 3 and run["summary"]["trials_ok"] == 3
    table = media(run["summary"], "results")
    assert table["_type"] == "table-file" and table["nrows"] == 3
    data = json.loads((run["files"] / table["path"]).read_text())
    assert "test_micro_f1" in data["columns"] and "epoch_history" not in data["columns"]
    assert sorted(r[data["columns"].index("trial_id")] for r in data["data"]) == ["g1", "t1", "t2"]
    images = {k.rsplit("/", 1)[0] for k, v in run["summary"].items() if k.startswith("report/") and v == "image-file"}
    assert "report/learning_curves" in images and "report/pretraining_stage1_curves" in images
    assert {"demo-results", "demo-report"} <= set(run["artifacts"])


TRIALS = """
import json, os, time
from tkre.console import TrialLines
from tkre.sweep.config import SweepConfig
from tkre.sweep.tracking import WandbTrials
from tkre.sweep.trial import CancelEndedPipelines

class Trial:  # what the callbacks read of a Tune trial
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config
    def __str__(self):
        return "run_trial_" + self.trial_id

row = json.loads(os.environ["ROW"])
sweep = SweepConfig(name="demo").model_dump()
wb = WandbTrials(project="p", group="demo", directory=os.environ["HOME"], mode="offline", job_type="grid", sweep=sweep)
callbacks = [TrialLines(), CancelEndedPipelines(), wb]
for cb in callbacks:
    cb.setup()
trial = Trial("t1", {"point": {"variant": "tkre", "data.seed": 2}})
for cb in callbacks:
    cb.on_trial_start(0, [trial], trial)
results = [{"epoch": 0, "dev_micro_f1": 0.2, "training_iteration": 1},
           {"epoch": 1, "dev_micro_f1": 0.4, "training_iteration": 2},
           {**row, "row_complete": True, "training_iteration": 3}]
seconds = {}
for i, result in enumerate(results):
    for cb in callbacks:
        t0 = time.perf_counter()
        cb.on_trial_result(i, [trial], trial, result)
        name = type(cb).__name__
        seconds[name] = max(seconds.get(name, 0.0), time.perf_counter() - t0)
restored = Trial("t2", {"point": {"variant": "golden_only"}})  # resumed by Tune: results without a start
for cb in callbacks:
    t0 = time.perf_counter()
    cb.on_trial_result(1, [trial, restored], restored, results[0])
    name = type(cb).__name__
    seconds[name] = max(seconds.get(name, 0.0), time.perf_counter() - t0)
wb.on_trial_complete(3, [trial, restored], trial)
wb.on_trial_error(3, [trial, restored], restored)
wb.on_experiment_end([trial, restored])
print("RESULT " + json.dumps(seconds))
"""


def test_trial_runs_carry_job_type_tags_and_curves_and_no_callback_stalls_tune(tmp_path):
    seconds = run_offline(tmp_path, TRIALS, ROW=json.dumps(row("tkre", 2, "t1")))
    # Tune warns when a callback takes over 0.1 s per result; wandb.init alone takes seconds
    assert set(seconds) == {"TrialLines", "CancelEndedPipelines", "WandbTrials"}
    assert max(seconds.values()) < 0.1, seconds
    runs = offline_runs(tmp_path / "home")
    assert runs["t2"]["job_type"] == "grid" and "variant:golden_only" in runs["t2"]["tags"]
    assert [h["dev_micro_f1"] for h in runs["t2"]["history"]] == [0.2]
    run = runs["t1"]
    assert run["id"] == "t1" and run["job_type"] == "grid" and run["group"] == "demo"
    assert run["config"]["variant"] == "tkre" and run["config"]["data.seed"] == 2
    assert {"variant:tkre", "seed:2", "K:8", "dataset:semeval", "backbone:typ_marker",
            "generator:hf:embedded:smollm2"} <= set(run["tags"])
    history = run["history"]
    assert [h["dev_micro_f1"] for h in history if h.get("_step") in (1, 2)] == [0.2, 0.4]  # Tune's per-epoch results
    curve = [(h["finetune/epoch"], h["finetune/train_loss"]) for h in history if "finetune/train_loss" in h]
    assert curve == [(1, 2.0), (2, 1.5)]
    stage1 = [(h["pretrain/stage1/epoch"], h["pretrain/stage1/heldout_mslm_loss"]) for h in history
              if "pretrain/stage1/heldout_mslm_loss" in h]
    assert stage1 == [(1, 5.5), (2, 5.0)]
    assert [h["pretrain/stage2/heldout_scl_loss"] for h in history if "pretrain/stage2/heldout_scl_loss" in h] == [2.5]
    table = media(run["summary"], "finetune/epoch_history")
    assert table["nrows"] == 2 and run["summary"]["test_micro_f1"] == 0.52

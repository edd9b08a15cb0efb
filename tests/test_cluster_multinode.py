"""A real two-node Ray cluster on one machine (ray.cluster_utils.Cluster): a tiny sweep whose trials
land on both nodes and share one artifact store, then the worker node is killed mid-sweep and the
sweep still finishes, the lost trial resuming from its checkpoint.

The cluster runs in a subprocess (this file, run as a script) so it never collides with the session's
single-node `ray_local`; the subprocess writes one JSON report that the tests assert on. Each node
has ONE logical CPU, so two concurrent 1-CPU trials must use both nodes.

The default-suite sweep is plain Ray Tune driven by tkre's cluster-fit check (`fit_trials`) and
tkre's real `ArtifactStore`; each trial is a small real function with per-epoch
checkpoints (~60 s on 2 cores). The slow test runs tkre's own sweep entry point
(`tkre.sweep.run.run_sweep(address=...)`, golden-only, tiny encoder, real Ray Train) on the same kind of
two-node cluster and checks that Train workers ran on both nodes (~2.5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

EPOCHS = 4
TRIALS = 4


# ------------------------------------------------------------------------------ the trial function

def _trial(config: dict) -> None:
    """Minimise (x - 3)^2 by gradient steps, one step per epoch, checkpointing every epoch."""
    import ray
    from ray import tune

    from tkre.store.artifacts import ArtifactStore, artifact_key

    node = ray.get_runtime_context().get_node_id()
    trial_id = tune.get_context().get_trial_id()
    store = ArtifactStore(config["storage"])

    def build(out: Path) -> dict:
        time.sleep(1.0)  # long enough for the concurrent trial to find the lock held
        (out / "table.json").write_text(json.dumps({"offset": 3.0}))
        return {"built_on": node}

    art = store.get_or_create("shared_table", artifact_key("shared_table", {"v": 1}), build, config={"v": 1})
    target = json.loads((art.path / "table.json").read_text())["offset"]

    x, start, resumed_from = float(config["x0"]), 0, None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads((Path(d) / "state.json").read_text())
        x, start, resumed_from = state["x"], state["epoch"] + 1, state["epoch"] + 1
    for epoch in range(start, EPOCHS):
        time.sleep(config["epoch_s"])
        x -= config["lr"] * 2 * (x - target)
        marks = Path(config["storage"]) / "marks"
        marks.mkdir(parents=True, exist_ok=True)
        (marks / f"{trial_id}-{epoch}-{node[:8]}.json").write_text(json.dumps(
            {"trial": trial_id, "epoch": epoch, "node": node, "resumed_from": resumed_from}))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"x": x, "epoch": epoch}))
            tune.report({"epoch": epoch, "loss": (x - target) ** 2, "node": node, "artifact_key": art.key,
                         "artifact_reused": art.reused, "resumed_from": resumed_from},
                        checkpoint=tune.Checkpoint.from_directory(d))


# ---------------------------------------------------------------------------- subprocess driver

def _kill_worker_when_busy(cluster, worker, worker_id: str, marks: Path, report: dict) -> None:
    """Remove the worker node once a trial there has checkpointed epoch >= 1 (but not finished)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        for f in marks.glob("*.json") if marks.is_dir() else []:
            m = json.loads(f.read_text())
            if m["node"] == worker_id and 1 <= m["epoch"] < EPOCHS - 1:
                report["killed_trial"], report["killed_after_epoch"] = m["trial"], m["epoch"]
                report["kill_time"] = time.time()
                cluster.remove_node(worker)
                return
        time.sleep(0.1)


def run_two_node_sweep(out_dir: Path, *, kill_worker: bool) -> dict:
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from tkre.store.artifacts import ArtifactStore
    from tkre.errors import ConfigError
    from tkre.cluster.resources import cluster_capacity, fit_trials

    storage = out_dir / "store"
    storage.mkdir(parents=True, exist_ok=True)
    # Cluster() advertises itself in /tmp/ray/ray_current_cluster, where any other process's plain
    # ray.init() would find it and join it (and its shutdown deletes whatever address is there). This
    # process connects by explicit address, so keep the cluster private to it.
    import ray._common.utils
    import ray._private.utils

    ray._private.utils.write_ray_address = lambda *a, **k: None
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    report: dict = {"head": cluster.head_node.node_id, "worker": worker.node_id}
    try:
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"WANDB_MODE": "disabled", "PYTHONPATH": os.pathsep.join(sys.path)}})
        cluster.wait_for_nodes()

        capacity = cluster_capacity(live=True, cluster_config={})
        # two 1-CPU nodes, 1-CPU trials (no Ray Train runs of their own), two at a time: fits
        concurrent = fit_trials([], capacity, trial_cpus=1, max_concurrent_trials=2)
        try:  # a 2-CPU trial fits the cluster's total but no single node
            fit_trials([], capacity, trial_cpus=2.0, max_concurrent_trials=2)
            report["oversized_error"] = None
        except ConfigError as e:
            report["oversized_error"] = str(e)

        killer = None
        if kill_worker:
            killer = threading.Thread(target=_kill_worker_when_busy, daemon=True,
                                      args=(cluster, worker, worker.node_id, storage / "marks", report))
            killer.start()
        tuner = tune.Tuner(
            tune.with_resources(_trial, {"cpu": 1}),
            param_space={"x0": tune.grid_search([0.0, 1.0, 5.0, 6.0][:TRIALS]), "lr": 0.25,
                         "epoch_s": 1.0, "storage": str(storage)},
            tune_config=tune.TuneConfig(metric="loss", mode="min", max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name="two_node", storage_path=str(out_dir / "tune"),
                                      failure_config=tune.FailureConfig(max_failures=3), verbose=0),
        )
        t0 = time.time()
        grid = tuner.fit()
        report["seconds"] = time.time() - t0
        if killer is not None:
            killer.join(timeout=5)
        report["errors"] = [str(r.error) for r in grid if r.error is not None]
        report["trials"] = [{"trial": r.metrics.get("trial_id"), "epoch": r.metrics.get("epoch"),
                             "loss": r.metrics.get("loss"), "artifact_key": r.metrics.get("artifact_key"),
                             "checkpoint": bool(r.checkpoint)} for r in grid]
        report["marks"] = [json.loads(f.read_text()) for f in sorted((storage / "marks").glob("*.json"))]
        report["artifacts"] = ArtifactStore(str(storage)).list("shared_table")
    finally:
        ray.shutdown()
        cluster.shutdown()
    return report


def _tiny_encoder(out: Path) -> str:
    """A tiny random BERT masked LM with the embedded MiniLM tokenizer (as conftest's fixture)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from tkre.model_sources import resolve_encoder

    tok = AutoTokenizer.from_pretrained(resolve_encoder("embedded:minilm"))
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=512)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def run_tkre_sweep_on_two_nodes(out_dir: Path) -> dict:
    """tkre's own sweep entry point (`run_sweep(..., address=...)`) on the two-node cluster: a
    golden-only grid of two seeds with a tiny encoder, two trials at a time (one Train worker each)."""
    import ray
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster
    from ray._private.state import actors as actor_table  # GCS actor table (the state API needs the dashboard)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sweep_helpers import golden_only_base, write_mini_dataset, write_sweep

    ray._private.utils.write_ray_address = lambda *a, **k: None
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    from tkre.data import load_dataset
    from tkre.sweep.run import run_sweep

    data = write_mini_dataset(load_dataset("semeval"), out_dir / "data")
    encoder = _tiny_encoder(out_dir / "encoder")
    storage = out_dir / "store"
    sweep = write_sweep(out_dir / "two_node.yaml", {
        "name": "two_node", "base": golden_only_base(data, encoder, storage, epochs=1),
        "grid": {"data.seed": [1, 2]}, "resources": {"max_concurrent_trials": 2, "trial_cpus": 0.05},
        "wandb": {"enabled": False}})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    report: dict = {"head": cluster.head_node.node_id, "worker": worker.node_id}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        out = run_sweep(str(sweep), address=cluster.address)
        report["status"] = out.rows["status"].tolist()
        report["errors"] = [e for e in out.rows.get("error", []) if e]
        report["test_micro_f1"] = out.rows["test_micro_f1"].tolist()
        table = actor_table()
        report["actor_classes"] = sorted({a.get("ActorClassName", "") for a in table.values()})
        report["train_worker_nodes"] = sorted({a["Address"]["NodeID"] for a in table.values()
                                               if "TrainWorker" in a.get("ActorClassName", "")})
    finally:
        ray.shutdown()
        cluster.shutdown()
    return report


def _main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--kill-worker", action="store_true")
    ap.add_argument("--tkre-sweep", action="store_true")
    args = ap.parse_args()
    if args.tkre_sweep:
        report = run_tkre_sweep_on_two_nodes(Path(args.out))
    else:
        report = run_two_node_sweep(Path(args.out), kill_worker=args.kill_worker)
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=1))


# ------------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory) -> dict:
    """One two-node sweep with the worker node removed mid-way (shared by the assertions below)."""
    out = tmp_path_factory.mktemp("two_node")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]),
           "RAY_DEDUP_LOGS": "0", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--kill-worker"],
                          env=env, capture_output=True, text=True, timeout=400)
    if proc.returncode != 0:
        pytest.fail(f"two-node sweep failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return json.loads((out / "report.json").read_text())


def test_trials_land_on_both_nodes_and_share_the_artifact_store(killed_sweep):
    r = killed_sweep
    nodes = {m["node"] for m in r["marks"]}
    assert nodes == {r["head"], r["worker"]}, f"trials ran on {nodes}, expected head and worker"
    # one artifact, built once, used by every trial whichever node it ran on
    assert len(r["artifacts"]) == 1, r["artifacts"]
    keys = {t["artifact_key"] for t in r["trials"]}
    assert keys == {r["artifacts"][0]["key"]}
    # the live-capacity check: 2 CPUs in total, but no single node has 2 -> fails early, says why
    assert r["oversized_error"] and "ONE node" in r["oversized_error"] and "CPU" in r["oversized_error"]


def test_worker_node_killed_mid_sweep_sweep_finishes_nothing_lost(killed_sweep):
    r = killed_sweep
    assert r.get("killed_trial"), "the worker node was never removed (no trial reached epoch 1 there)"
    assert r["errors"] == [], r["errors"]
    assert len(r["trials"]) == TRIALS
    for t in r["trials"]:  # every trial finished every epoch and converged towards the shared target
        assert t["epoch"] == EPOCHS - 1 and t["checkpoint"], t
        assert t["loss"] < 9 * 0.5 ** (2 * EPOCHS) + 1e-9, t
    per_trial: dict[str, set[int]] = {}
    for m in r["marks"]:
        per_trial.setdefault(m["trial"], set()).add(m["epoch"])
    assert all(epochs == set(range(EPOCHS)) for epochs in per_trial.values()), per_trial
    # the killed trial came back on the surviving node from its checkpoint, not from scratch
    after = [m for m in r["marks"] if m["trial"] == r["killed_trial"] and m["resumed_from"] is not None]
    assert after, "the killed trial never resumed"
    assert all(m["node"] == r["head"] for m in after)
    assert min(m["resumed_from"] for m in after) >= 1
    assert min(m["resumed_from"] for m in after) <= r["killed_after_epoch"] + 1


@pytest.mark.slow
def test_tkre_sweep_entry_point_spreads_train_workers_over_both_nodes(tmp_path):
    """`tkre.sweep.run.run_sweep(address=...)` on the two-node cluster: both trials finish, and their Ray
    Train workers (1 CPU each, two trials at a time) ran on both nodes. Several minutes on 2 cores."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]),
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(tmp_path), "--tkre-sweep"],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"tkre sweep on two nodes failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["status"] == ["ok", "ok"], r
    assert all(0.0 <= f <= 1.0 for f in r["test_micro_f1"]), r
    assert set(r["train_worker_nodes"]) == {r["head"], r["worker"]}, r


if __name__ == "__main__":
    _main()

"""The test-set evaluation after fine-tuning runs on the trial's fine-tuning resources: on GPUs, Ray
Data actors with one Train worker's GPUs/CPUs/custom resources each (on a local Ray that declares 2
GPUs, so the request really schedules: the actors hold GPU ids), scoring exactly as in process; on CPU,
the placement of before (in process for small sets, single-CPU actors for large ones)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tkre.config import FinetuneConfig
from tkre.finetune.evaluate import evaluate_split, evaluation_placement
from tkre.finetune.spec import FinetuneSpec
from tkre.finetune.task import FinetuneTask


def test_placement_follows_the_finetuning_resources():
    gpu = FinetuneConfig(encoder="e", eval_actors=5, resources={
        "num_workers": 2, "use_gpu": True, "gpus_per_worker": 0.5, "cpus_per_worker": 4, "custom": {"stage": 0.01}})
    assert evaluation_placement(gpu) == {"ray_data_min_examples": 0, "actors": 2, "actor_resources": {"stage": 0.01},
                                         "actor_cpus": 4.0, "actor_gpus": 0.5}
    cpu = FinetuneConfig(encoder="e", eval_actors=3, eval_ray_data_min_examples=500,
                         resources={"num_workers": 2, "cpus_per_worker": 4, "custom": {"stage": 0.01}})
    assert evaluation_placement(cpu) == {"ray_data_min_examples": 500, "actors": 3, "actor_resources": {"stage": 0.01},
                                         "actor_cpus": 1.0, "actor_gpus": 0.0}


@pytest.fixture(scope="module")
def checkpoint(tiny_encoder_dir, semeval, tmp_path_factory):
    """A fine-tuning checkpoint as the Train run saves it (an untrained head: the scores are what matter)."""
    spec = FinetuneSpec(backbone="typ_marker", relations=list(semeval.relations), no_relation=semeval.no_relation,
                        max_length=64, use_types=False)
    task = FinetuneTask(spec=spec, init_path=tiny_encoder_dir, train=[], dev=[], seed=3)
    out = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    task.save(task.build_model(), str(out))
    return str(out)


def test_gpu_evaluation_schedules_on_gpus_and_scores_as_in_process(ray_with_gpus, checkpoint, semeval, tmp_path):
    test = semeval.split("test")[:120]
    here = evaluate_split(checkpoint, test, tmp_path / "here", relations=semeval.relations, batch_size=16,
                          **evaluation_placement(FinetuneConfig(encoder="e")))
    assert here["inference"] == "in_process"  # CPU training, small test set: as before
    cfg = FinetuneConfig(encoder="e", resources={"num_workers": 2, "use_gpu": True, "cpus_per_worker": 1})
    on_gpu = evaluate_split(checkpoint, test, tmp_path / "gpu", relations=semeval.relations, batch_size=16,
                            actor_checkpoint=checkpoint, **evaluation_placement(cfg))
    assert on_gpu["inference"] == "ray_data"
    # each actor held one of the declared GPUs (torch sees no CUDA here, so it predicted on CPU)
    held = [w.split(":", 1)[1] for w in on_gpu["inference_devices"]]
    assert held and all(h in ("0", "1") for h in held), on_gpu["inference_devices"]
    assert on_gpu["test_micro_f1"] == here["test_micro_f1"] and on_gpu["test_macro_f1"] == here["test_macro_f1"]
    a, b = (pq.read_table(tmp_path / d / "predictions.parquet").to_pylist() for d in ("here", "gpu"))
    assert [r["predicted"] for r in a] == [r["predicted"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b])


def test_run_finetune_hands_the_placement_to_the_test_evaluation(checkpoint, tiny_encoder_dir, semeval, tmp_path,
                                                                 monkeypatch):
    """run_finetune evaluates the best checkpoint with `evaluation_placement` of its own config (training
    itself replaced: Ray Train on GPUs cannot run here)."""
    from types import SimpleNamespace

    import tkre.train_loop
    from tkre.finetune import run as run_module

    asked = {}
    monkeypatch.setattr(tkre.train_loop, "fit", lambda *a, **kw: SimpleNamespace(
        best_checkpoint_dir=checkpoint, best_model=checkpoint, metrics_history=[], summary={}))

    def fake_evaluate(checkpoint_dir, examples, out_dir, **kw):
        asked.update(kw)
        return {"test_micro_f1": 0.0, "counts": {}}

    monkeypatch.setattr(run_module, "evaluate_split", fake_evaluate)
    cfg = FinetuneConfig(encoder=tiny_encoder_dir, epochs=1, resources={"num_workers": 2, "use_gpu": True})
    train = semeval.split("train")[:8]
    run_module.run_finetune(cfg, train=train, dev=[], test=semeval.split("test")[:4], relations=semeval.relations,
                            no_relation=semeval.no_relation, out_dir=tmp_path / "run")
    assert {k: asked[k] for k in evaluation_placement(cfg)} == evaluation_placement(cfg)
    assert asked["actor_gpus"] == 1.0 and asked["actors"] == 2 and asked["actor_checkpoint"] == checkpoint

"""Prediction and scoring of fine-tuned classifiers.

- `predict(model, tokenizer, spec, examples)`: batched in-process inference (length-sorted batches,
  dynamic padding, `torch.inference_mode`); used for dev every epoch and for small test sets.
- `predict_ray_data(checkpoint, examples)`: the same through Ray Data `map_batches` with an
  actor pool (each actor loads the checkpoint once); used for large test sets, and for every test set
  of a run that trains on GPUs. The actors may run on any node: `checkpoint` is a hand-over
  (`tkre.store.refs`) that each materialises on its own.
- `evaluation_placement(cfg)`: where a fine-tuning run's test evaluation runs (see its docstring).
- `score_predictions(...)`: metrics via `tkre.metrics.classification_scores` (fractions 0-1) plus
  counts: windowed examples and gold relations outside the model's label set (always wrong).
- `evaluate_checkpoint(dir, examples, out_dir)`: predictions.parquet (id, gold, predicted, score)
  + metrics.json.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

from tkre.config import FinetuneConfig
from tkre.data.records import RelationExample
from tkre.finetune.spec import FinetuneSpec, load_checkpoint
from tkre.io import atomic_path, atomic_write_json
from tkre.metrics import classification_scores
from tkre.store.refs import HandOver, materialise
from tkre.cluster.runtime import init_ray

logger = logging.getLogger(__name__)

#: Test sets at least this large go through Ray Data (override per call / FinetuneConfig).
RAY_DATA_MIN_EXAMPLES = 10_000
INPUT_KEYS = ("input_ids", "attention_mask", "subj_pos", "obj_pos", "mask_pos")


def predict(model, tokenizer, spec: FinetuneSpec, examples: Sequence[RelationExample], *,
            batch_size: int = 64, encoded: tuple[list[dict], int] | None = None) -> tuple[list[str], list[float], int]:
    """(predicted relation, softmax confidence of it, number of windowed examples) per example;
    `encoded`: `spec.encode(examples, tokenizer)` when the caller already has it (a dev set every epoch)."""
    import torch

    items, n_windowed = encoded if encoded is not None else spec.encode(examples, tokenizer)
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    device = next(model.parameters()).device
    preds: list[str] = [""] * len(items)
    conf: list[float] = [0.0] * len(items)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = spec.collate([items[i] for i in idx], tokenizer.pad_token_id)
            inputs = {k: v.to(device) for k, v in batch.items() if k in INPUT_KEYS}
            scores = model(**inputs)["scores"].float()
            prob, best = torch.softmax(scores, dim=-1).max(dim=-1)
            for j, i in enumerate(idx):
                preds[i] = spec.relations[int(best[j])]
                conf[i] = float(prob[j])
    model.train(was_training)
    return preds, conf, n_windowed


class _PredictorActor:
    """Ray Data actor: loads the checkpoint once (on a GPU when it holds one), predicts batches of
    serialised examples."""

    def __init__(self, checkpoint: HandOver, batch_size: int, threads: int = 1):
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        self.model, self.tokenizer, self.spec = load_checkpoint(materialise(checkpoint))
        self.gpus = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpus and torch.cuda.is_available() else "cpu"
        if self.gpus and self.device == "cpu":
            logger.warning("evaluation actor holds GPU(s) %s but torch sees no CUDA device: predicting on CPU",
                           self.gpus)
        self.model.to(self.device)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        examples = [RelationExample.from_dict(json.loads(s)) for s in batch["record"]]
        preds, conf, _ = predict(self.model, self.tokenizer, self.spec, examples, batch_size=self.batch_size)
        return {"row": np.asarray(batch["row"]), "predicted": np.asarray(preds, dtype=object),
                "score": np.asarray(conf, dtype=np.float64),
                "where": np.asarray([f"{self.device}:{','.join(self.gpus)}"] * len(preds), dtype=object)}


def evaluation_placement(cfg: FinetuneConfig) -> dict:
    """Where a fine-tuning run's test set is predicted: `evaluate_split`'s placement arguments.

    On GPUs (`resources.use_gpu`): always through Ray Data actors, `num_workers` of them, each with one
    Train worker's resources (GPUs, CPUs, custom), batches on CUDA -- what the trial's training had
    reserved and has just given back, so the evaluation fits wherever training did. The pipeline task
    that calls this reserves no CPU and may sit on a head without a GPU, so even a small test set does
    not stay in process there. Why actors and not rank 0 of the Train run after training: the actors
    need no change to the shared training loop, open the best checkpoint as a hand-over that each
    materialises on its own node, and use every worker's GPU, not one.

    On CPU: as before -- in process below `eval_ray_data_min_examples`, else `eval_actors`
    single-thread actors, each also reserving the custom resources."""
    r = cfg.resources
    if r.use_gpu:
        return {"ray_data_min_examples": 0, "actors": r.num_workers, "actor_resources": dict(r.custom),
                "actor_cpus": r.cpus_per_worker, "actor_gpus": r.gpus_per_worker}
    return {"ray_data_min_examples": cfg.eval_ray_data_min_examples, "actors": cfg.eval_actors,
            "actor_resources": dict(r.custom), "actor_cpus": 1.0, "actor_gpus": 0.0}


def predict_ray_data(checkpoint: HandOver, examples: Sequence[RelationExample], *, batch_size: int = 64,
                     actors: int = 2, resources: dict[str, float] | None = None, cpus: float = 1.0,
                     gpus: float = 0.0) -> tuple[list[str], list[float], list[str]]:
    """Batched inference with Ray Data `map_batches` over an actor pool of `actors` actors, each
    reserving `cpus` CPUs (torch threads), `gpus` GPUs and `resources` (custom Ray resources: the nodes
    that run the trial's stage work). Returns predictions, confidences and where each actor ran
    ("cuda:<gpu ids>" or "cpu:")."""
    import ray
    import ray.data

    init_ray()
    rows = [{"row": i, "record": json.dumps(ex.to_dict())} for i, ex in enumerate(examples)]
    ds = ray.data.from_items(rows).map_batches(
        _PredictorActor, fn_constructor_kwargs={"checkpoint": checkpoint, "batch_size": batch_size,
                                                "threads": int(cpus)},
        batch_size=max(batch_size, 256), compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
        batch_format="numpy", **({"num_gpus": gpus} if gpus else {}),
        **({"resources": dict(resources)} if resources else {}))
    preds: list[str] = [""] * len(examples)
    conf: list[float] = [0.0] * len(examples)
    where: set[str] = set()
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for r, p, s in zip(out["row"], out["predicted"], out["score"]):
            preds[int(r)], conf[int(r)] = str(p), float(s)
        where.update(str(w) for w in out["where"])
    return preds, conf, sorted(where)


def score_predictions(examples: Sequence[RelationExample], preds: Sequence[str], spec: FinetuneSpec,
                      *, split: str, n_windowed: int) -> dict:
    """Metrics of one split, keys prefixed with the split name, plus `per_relation` and `counts`."""
    gold = [ex.relation for ex in examples]
    s = classification_scores(gold, preds, spec.no_relation)
    known = set(spec.relations)
    unseen = Counter(g for g in gold if g not in known)
    if unseen:
        logger.warning("%s: %d examples have relations the model was not trained on (counted as wrong): %s",
                       split, sum(unseen.values()), dict(unseen))
    out = {f"{split}_{k}": s[k] for k in ("micro_f1", "micro_precision", "micro_recall", "macro_f1", "accuracy")}
    out.update({
        "f1_scale": "fraction",
        "metric_excluded_label": s["excluded_label"],  # the no-relation class; None: micro-F1 over all
        "per_relation": s["per_relation"],
        "counts": {f"{split}_examples": len(gold), f"{split}_windowed": n_windowed,
                   f"{split}_unseen_relation_examples": sum(unseen.values()),
                   f"{split}_unseen_relations": dict(sorted(unseen.items()))},
    })
    return out


def constant_baselines(examples: Sequence[RelationExample], no_relation: str | None) -> dict:
    """Micro-F1 of always predicting the most frequent gold class, and the most frequent class other
    than the no-relation class (the first scores 0 micro-F1 when that class is no-relation; without
    a no-relation class the two are the same)."""
    gold = [ex.relation for ex in examples]
    counts = Counter(gold)
    out = {}
    if counts:
        top = counts.most_common(1)[0][0]
        out["majority_class"] = {"relation": top, "micro_f1": classification_scores(
            gold, [top] * len(gold), no_relation)["micro_f1"]}
        rest = [(r, n) for r, n in counts.most_common() if r != no_relation]
        if rest:
            r = rest[0][0]
            out["most_frequent_non_no_relation"] = {
                "relation": r, "micro_f1": classification_scores(gold, [r] * len(gold), no_relation)["micro_f1"]}
    return out


def write_predictions(path: str | Path, examples: Sequence[RelationExample], preds: Sequence[str],
                      conf: Sequence[float]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [ex.id for ex in examples], "gold": [ex.relation for ex in examples],
                      "predicted": list(preds), "score": pa.array(list(conf), type=pa.float64())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def evaluate_split(checkpoint_dir: str, examples: Sequence[RelationExample], out_dir: str | Path, *,
                   split: str = "test", relations: Sequence[str] | None = None, batch_size: int = 64,
                   ray_data_min_examples: int = RAY_DATA_MIN_EXAMPLES, actors: int = 2,
                   actor_checkpoint: HandOver | None = None, actor_resources: dict[str, float] | None = None,
                   actor_cpus: float = 1.0, actor_gpus: float = 0.0) -> dict:
    """Predict `examples` with the checkpoint, write out_dir/predictions.parquet, return metrics.

    Ray Data's actors (large sets; `evaluation_placement` says when) open `actor_checkpoint` (default:
    `checkpoint_dir`), a hand-over that each materialises on its node, and reserve `actor_cpus`,
    `actor_gpus` and `actor_resources`."""
    model, tokenizer, spec = load_checkpoint(str(checkpoint_dir), relations=relations)
    where = ["in_process"]
    if len(examples) >= ray_data_min_examples:
        _, n_windowed = spec.encode(examples, tokenizer)  # counted here; actors only predict
        del model
        preds, conf, where = predict_ray_data(actor_checkpoint or str(checkpoint_dir), examples,
                                              batch_size=batch_size, actors=actors, resources=actor_resources,
                                              cpus=actor_cpus, gpus=actor_gpus)
        engine = "ray_data"
    else:
        preds, conf, n_windowed = predict(model, tokenizer, spec, examples, batch_size=batch_size)
        engine = "in_process"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_predictions(Path(out_dir) / "predictions.parquet", examples, preds, conf)
    metrics = score_predictions(examples, preds, spec, split=split, n_windowed=n_windowed)
    metrics["inference"] = engine
    metrics["inference_devices"] = where  # "cuda:<gpu ids>" / "cpu:" per Ray Data actor, or in_process
    metrics["baselines"] = constant_baselines(examples, spec.no_relation)
    return metrics


def evaluate_checkpoint(checkpoint_dir, examples: list[RelationExample], out_dir, *, split: str = "test",
                        relations: Sequence[str] | None = None, batch_size: int = 64,
                        ray_data_min_examples: int = RAY_DATA_MIN_EXAMPLES, actors: int = 2) -> dict:
    """Writes out_dir/predictions.parquet (id, gold, predicted, score) and out_dir/metrics.json;
    returns the metrics (`<split>_micro_f1` etc. as fractions 0-1)."""
    metrics = evaluate_split(checkpoint_dir, examples, out_dir, split=split, relations=relations,
                             batch_size=batch_size, ray_data_min_examples=ray_data_min_examples, actors=actors)
    metrics["checkpoint"] = str(checkpoint_dir)
    metrics["split"] = split
    atomic_write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics

"""`run_finetune`: golden (+ capped synthetic) training set -> Ray Train fine-tuning through the shared
loop (tkre.train_loop.fit) with dev micro-F1 after every epoch -> the best dev epoch's checkpoint
-> test metrics. Writes out_dir/checkpoint, out_dir/predictions.parquet, out_dir/metrics.json.

The weights to start from (`init`, default `cfg.encoder`) may be a reference to a stored artifact
(`tkre.store.refs`): each Train worker materialises it on its own node. A test set large enough for
Ray Data's actors gets the best epoch's Train checkpoint as a reference too, not this node's copy.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from tkre.config import FinetuneConfig
from tkre.data.records import RelationExample
from tkre.errors import ConfigError, DataError
from tkre.finetune.evaluate import evaluate_split, evaluation_placement
from tkre.finetune.spec import FinetuneSpec
from tkre.finetune.task import FinetuneTask
from tkre.io import atomic_path, atomic_write_json, stable_hash
from tkre.store.refs import HandOver

logger = logging.getLogger(__name__)

SELECT_METRIC = "dev_micro_f1"


def select_training_set(golden: Sequence[RelationExample], synthetic: Sequence[RelationExample] | None,
                        relations: Sequence[str], per_relation: int | None, seed: int
                        ) -> tuple[list[RelationExample], dict]:
    """Golden examples + at most `per_relation` synthetic examples of each relation (None = all,
    0 = none). The synthetic pick is deterministic: per relation, ordered by a hash of (seed, id).
    Synthetic examples of relations outside the label set are skipped and counted."""
    known = set(relations)
    for i, ex in enumerate(golden):
        if ex.relation not in known:
            raise DataError(f"training relation {ex.relation!r} is not in the dataset's label set",
                            record=ex.id or i, field="relation")
    by_rel: dict[str, list[RelationExample]] = defaultdict(list)
    skipped = Counter()
    for ex in synthetic or []:
        if ex.relation in known:
            by_rel[ex.relation].append(ex)
        else:
            skipped[ex.relation] += 1
    chosen: list[RelationExample] = []
    for rel in relations:
        pool = sorted(by_rel.get(rel, []), key=lambda ex: stable_hash([seed, ex.id, ex.text]))
        chosen.extend(pool if per_relation is None else pool[:per_relation])
    counts = {"golden": len(golden), "synthetic_available": sum(len(v) for v in by_rel.values()),
              "synthetic_used": len(chosen), "synthetic_cap_per_relation": per_relation,
              "synthetic_unknown_relation_skipped": dict(skipped)}
    return list(golden) + chosen, counts


def loop_budget(cfg: FinetuneConfig, *, has_dev: bool) -> dict:
    """The LoopSettings fields that carry `cfg.budget`: epochs, max_steps, patience."""
    b = cfg.budget
    if b.mode == "steps":
        return {"epochs": 1, "max_steps": b.steps}  # the loop derives the epochs from the steps
    if b.mode == "convergence":
        if not has_dev:
            raise ConfigError("finetune.budget.mode 'convergence' watches dev micro-F1, but there are no dev examples")
        return {"epochs": b.max_epochs, "patience": b.patience}
    return {"epochs": cfg.epochs}


def _coverage_warnings(train: Sequence[RelationExample], dev: Sequence[RelationExample],
                       relations: Sequence[str], no_relation: str | None) -> dict:
    in_train = {ex.relation for ex in train}
    in_dev = {ex.relation for ex in dev}
    no_train = [r for r in relations if r not in in_train]
    no_dev = [r for r in relations if r not in in_dev]
    if no_train:
        logger.warning("relations with no training example (the model cannot learn them): %s", no_train)
    if no_dev:
        logger.warning("relations with no dev example (dev micro-F1 cannot reward them; K too small?): %s",
                       no_dev)
    return {"relations_without_train_examples": no_train, "relations_without_dev_examples": no_dev}


def run_finetune(cfg: FinetuneConfig, *, train: list[RelationExample], dev: list[RelationExample],
                 test: list[RelationExample], relations: list[str], no_relation: str | None,
                 synthetic: list[RelationExample] | None = None, out_dir, run_name: str | None = None,
                 storage_path: str | None = None, callbacks: list | None = None,
                 init: HandOver | None = None) -> dict:
    """Fine-tune, keep the best epoch by dev micro-F1, evaluate it on test; returns metrics.json's dict.

    A second call with the same run_name/storage_path resumes from the last finished epoch."""
    from tkre.model_sources import resolve_encoder
    from tkre.train_loop import LoopSettings, fit

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not relations:
        raise ConfigError("empty label set")
    if no_relation is None:
        logger.info("the label set has no no-relation class: micro-F1 is over all %d relations", len(relations))
    examples, counts = select_training_set(train, synthetic, relations, cfg.synthetic_cap_per_relation, cfg.seed)
    if not examples:
        raise DataError("no training examples")
    coverage = _coverage_warnings(examples, dev, relations, no_relation)
    use_types = cfg.use_types if cfg.use_types is not None else all(
        ex.subj_type and ex.obj_type for ex in train)
    spec = FinetuneSpec(backbone=cfg.backbone, relations=list(relations), no_relation=no_relation,
                        max_length=cfg.max_length, use_types=bool(use_types),
                        label_words=dict(cfg.genpt_label_words))
    init_path = resolve_encoder(cfg.encoder) if init is None else init
    task = FinetuneTask(spec=spec, init_path=init_path, train=examples, dev=list(dev), seed=cfg.seed,
                        eval_batch_size=cfg.eval_batch_size)
    _, train_windowed = spec.encode(examples, task.tokenizer)  # fail fast on bad input, count windows
    settings = LoopSettings(**loop_budget(cfg, has_dev=bool(dev)), lr=cfg.lr, batch_size=cfg.batch_size,
                            warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=cfg.seed,
                            select_metric=SELECT_METRIC if dev else None, eval_every_steps=cfg.eval_every_steps)
    if not dev:
        logger.warning("no dev examples: the last epoch is kept instead of the best dev epoch")
    run_name = run_name or "finetune-" + stable_hash(
        [cfg.model_dump(exclude={"resources"}), [ex.id for ex in examples], len(dev), relations])
    storage_path = storage_path or str(out_dir / "ray_runs")
    result = fit(task, settings, cfg.resources, run_name=run_name, storage_path=storage_path, callbacks=callbacks)

    checkpoint = out_dir / "checkpoint"
    with atomic_path(checkpoint) as tmp:
        shutil.copytree(result.best_checkpoint_dir, tmp)
    test_metrics = evaluate_split(str(checkpoint), test, out_dir, split="test", batch_size=cfg.eval_batch_size,
                                  actor_checkpoint=result.best_model, **evaluation_placement(cfg))
    history = [{k: h.get(k) for k in ("epoch", "global_step", "train_loss", "dev_micro_f1", "dev_macro_f1", "samples_per_s",
                                      "train_seconds") if k in h} for h in result.metrics_history]
    best_epoch, best_step = result.summary.get("best_epoch"), result.summary.get("best_step")
    best = next((h for h in result.metrics_history if h.get("global_step") == best_step), {})
    metrics = {
        **{k: v for k, v in test_metrics.items() if k not in ("counts",)},
        "dev_micro_f1": best.get("dev_micro_f1"), "dev_macro_f1": best.get("dev_macro_f1"),
        "best_epoch": best_epoch, "epochs": cfg.epochs, "select_metric": settings.select_metric,
        "budget": cfg.budget.describe(cfg.epochs), "steps": result.summary.get("global_step"),
        "best_step": best_step, "evaluations": len(result.metrics_history),
        "epochs_run": result.metrics_history[-1]["epoch"] + 1 if result.metrics_history else 0,
        "eval_every_steps": cfg.eval_every_steps,
        "stopped_on_patience": result.summary.get("stopped_on_patience"),
        "steps_per_epoch": result.summary.get("steps_per_epoch"),
        "history": history,
        "counts": {**test_metrics["counts"], **counts, "train_examples": len(examples),
                   "train_windowed": train_windowed, "dev_examples": len(dev), **coverage},
        "backbone": cfg.backbone, "init": cfg.encoder if init is None else str(init), "use_types": spec.use_types,
        "checkpoint": str(checkpoint), "run_name": run_name, "run_path": result.summary.get("run_path"),
        "resumed_from_epoch": result.summary.get("resumed_from_epoch"),
        "num_workers": cfg.resources.num_workers, "wall_seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics

"""The two pre-training stages as library calls (the CLI and the pipeline call these).

Stage 1: MSLM on the explanation corpus plus the golden texts.
Stage 2: lambda1 * MSLM + lambda2 * SCL on golden + synthetic examples, starting from stage 1.
Each writes out_dir/checkpoint (HF masked LM + tokenizer [+ SCL anchors]) and out_dir/summary.json,
and returns the summary. A stage switched off (`enabled: false`) trains nothing: its summary names
the init weights as its checkpoint so the next step can chain on it unchanged.

`init` is a hand-over (`tkre.store.refs`): a name or folder, or a reference to a stored artifact that
each node materialises for itself -- the Train workers may run on nodes that share no disk with the
caller. The head warm-up hands stage 1 its Train checkpoint the same way, not its local copy.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from tkre import progress
from tkre.config import PretrainConfig, StageConfig
from tkre.data import RelationExample
from tkre.errors import TkreError
from tkre.io import atomic_path, atomic_write_json
from tkre.pretrain.data import (SCL_SKIPPED, MaskingSettings, SpanText, encode_corpus, from_examples,
                               from_explanations)
from tkre.pretrain.masking import MaskingProbabilities
from tkre.pretrain.model import check_init_dir
from tkre.pretrain.scl import AnchorTable
from tkre.pretrain.task import HELDOUT_EPOCH, PretrainTask
from tkre.store.artifacts import is_remote
from tkre.store.refs import HandOver, materialise
from tkre.train_loop import LoopSettings, fit
from tkre.cluster.runtime import init_ray

logger = logging.getLogger(__name__)


def head_warmup_run_name(stage1_run_name: str) -> str:
    """The Ray Train run name of stage 1's head-only warm-up (tkre.pipeline deletes that run's folder too)."""
    return f"{stage1_run_name}_head_warmup"


def pretrain_stage1(cfg: PretrainConfig, *, init: HandOver, golden: list[RelationExample],
                    explanations: list[dict] | None, out_dir, run_name: str | None = None,
                    storage_path: str | None = None, callbacks: list | None = None) -> dict:
    """MSLM on explanations (mentions located in the explanation text) + golden texts. With
    `mlm_head_warmup_epochs`, a head-only MSLM run on the same corpus comes first (out_dir/head_warmup)
    and stage 1 starts from it; its summary is kept under "head_warmup"."""
    counts: Counter = Counter()
    texts = from_explanations(explanations or [], counts) + from_examples(golden)
    counts["explanations"] = len(explanations or [])
    counts["golden"] = len(golden)
    warm = None
    if cfg.stage1.enabled and cfg.mlm_head_warmup_epochs > 0:
        warm, init = _run_stage(cfg, cfg.stage1.model_copy(update={"epochs": cfg.mlm_head_warmup_epochs}), "head_warmup",
                          init=init, texts=texts, relations=None, counts=counts, out_dir=Path(out_dir) / "head_warmup",
                          run_name=head_warmup_run_name(run_name or 'pretrain_stage1'), storage_path=storage_path,
                          callbacks=callbacks, head_only=True)
    summary, _ = _run_stage(cfg, cfg.stage1, "stage1", init=init, texts=texts, relations=None, counts=counts,
                         out_dir=out_dir, run_name=run_name, storage_path=storage_path, callbacks=callbacks)
    if warm is not None:
        summary["head_warmup"] = {k: warm[k] for k in ("init", "checkpoint", "heldout_mslm_loss_before",
                                                       "heldout_mslm_loss_after", "history")}
        atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary


def pretrain_stage2(cfg: PretrainConfig, *, init: HandOver, golden: list[RelationExample],
                    synthetic: list[RelationExample] | None, relations: list[str], out_dir,
                    run_name: str | None = None, storage_path: str | None = None,
                    callbacks: list | None = None) -> dict:
    """lambda1 * MSLM + lambda2 * SCL on golden + synthetic; SCL is off when lambda2 == 0."""
    counts: Counter = Counter(golden=len(golden), synthetic=len(synthetic or []))
    texts = from_examples(list(golden) + list(synthetic or []))
    return _run_stage(cfg, cfg.stage2, "stage2", init=init, texts=texts,
                      relations=list(relations) if cfg.scl.lambda2 > 0 else None, counts=counts,
                      out_dir=out_dir, run_name=run_name, storage_path=storage_path, callbacks=callbacks)[0]


def heldout_sample(items: list, fraction: float, cap: int, seed: int) -> list:
    """A seeded sample of `fraction` of `items` (at least 1, at most `cap`), in corpus order, to
    evaluate the MSLM loss on. A copy: the stage trains on every item, the sample included -- the
    corpus is small (K-shot golden texts) and the method trains on all of it; the numbers track
    how well the model fits its corpus, not generalisation."""
    n = max(1, min(cap, len(items), int(round(fraction * len(items)))))
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    return [items[i] for i in sorted(order[:n])]


def _run_stage(cfg: PretrainConfig, stage: StageConfig, name: str, *, init: HandOver, texts: list[SpanText],
               relations: list[str] | None, counts: Counter, out_dir, run_name, storage_path, callbacks,
               head_only: bool = False) -> tuple[dict, HandOver]:
    """(the stage's summary, what it hands the next step: its best Train checkpoint, or `init` when off)."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    init_path = check_init_dir(materialise(init))  # on this node: the tokenizer, the held-out baseline
    task_init = init if not isinstance(init, str) else init_path  # the Train workers open it on theirs
    summary: dict[str, Any] = {"stage": name, "enabled": stage.enabled,
                               "init": init_path if isinstance(init, str) else str(init)}
    if not stage.enabled:
        summary["checkpoint"] = summary["init"]
        atomic_write_json(out_dir / "summary.json", summary)
        logger.info("%s switched off: passing %s on", name, summary["init"])
        return summary, init
    if not texts:
        raise TkreError(f"{name}: empty corpus -- no explanations and no examples to pre-train on")

    tokenizer = AutoTokenizer.from_pretrained(init_path)
    if tokenizer.mask_token_id is None:
        raise TkreError(f"{init_path}: the tokenizer has no mask token -- not a masked-LM encoder")
    index = None
    if relations is not None:
        table = AnchorTable(relations, 1)  # only for its name -> row mapping and its error message
        index = lambda rel, record: table.index(rel, record=record)  # noqa: E731
    items, skips = encode_corpus(tokenizer, texts, max_length=cfg.max_length, relation_index=index)
    if not items:
        raise TkreError(f"{name}: empty corpus after encoding ({len(texts)} texts, skipped: {dict(skips)})")
    heldout = heldout_sample(items, cfg.heldout_fraction, cfg.max_heldout, cfg.seed)
    masking = MaskingSettings(
        masking=cfg.masking, probs=MaskingProbabilities(cfg.p_relation, cfg.p_entity, cfg.p_other),
        bert_rate=cfg.bert_mask_prob, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, seed=cfg.seed,
        scl=cfg.scl if relations is not None else None)
    task = PretrainTask(init_path=task_init, train_items=items, heldout_items=heldout, masking=masking,
                        relations=relations, scl=cfg.scl if name == "stage2" else None,
                        head_init=cfg.mlm_head_init, head_only=head_only)
    before = _heldout_before(task)
    settings = LoopSettings(epochs=stage.epochs, lr=stage.lr, batch_size=stage.batch_size,
                            grad_accum=cfg.grad_accum, warmup_ratio=cfg.warmup_ratio,
                            weight_decay=cfg.weight_decay, seed=cfg.seed, mixed_precision=cfg.mixed_precision)
    storage = storage_path or str(out_dir / "ray")
    result = fit(task, settings, cfg.resources, run_name=run_name or f"pretrain_{name}", storage_path=storage,
                 callbacks=callbacks)

    checkpoint = out_dir / "checkpoint"
    with atomic_path(checkpoint) as tmp:
        shutil.copytree(result.best_checkpoint_dir, tmp)
    last = result.metrics_history[-1] if result.metrics_history else {}
    summary.update(
        checkpoint=str(checkpoint), texts=len(texts), train_texts=len(items), heldout_texts=len(heldout),
        heldout_is_copy=True, head_only=head_only, mlm_head_init=cfg.mlm_head_init, counts=dict(counts),
        skipped=dict(skips),
        skipped_total=skips.get("entity_truncated", 0), masking=cfg.masking, scl=relations is not None,
        relations=relations, scl_skipped_examples=skips.get(SCL_SKIPPED, 0) if relations is not None else 0,
        heldout_mslm_loss_before=before.get("heldout_mslm_loss"),
        heldout_mslm_loss_after=last.get("heldout_mslm_loss"),
        heldout_scl_loss_before=before.get("heldout_scl_loss"), heldout_scl_loss_after=last.get("heldout_scl_loss"),
        history=[{k: v for k, v in m.items() if isinstance(v, (int, float))} for m in result.metrics_history],
        fit=result.summary,
    )
    atomic_write_json(out_dir / "summary.json", summary)
    if skips.get("entity_truncated"):
        logger.warning("%s: skipped %d texts whose entity was cut off at max_length=%d",
                       name, skips["entity_truncated"], cfg.max_length)
    if relations is not None and skips.get(SCL_SKIPPED):
        logger.warning("%s: %d of %d examples have no token outside the entities and the relation span, so no "
                       "negative span: their SCL term is skipped (MSLM still trains on them)",
                       name, skips[SCL_SKIPPED], len(items))
    # the next step starts from this stage's weights: its copy here when every node sees this disk (local
    # storage), else the Train checkpoint, which each node downloads for itself
    return summary, (result.best_model if is_remote(storage) else str(checkpoint))


def _heldout_before(task: PretrainTask) -> dict:
    """Held-out losses of the initial weights (on the driver, CPU), the baseline the run must beat."""
    model = task.build_model().eval()
    with torch.no_grad():
        return task.evaluate(model, HELDOUT_EPOCH)


def run_pretraining(cfg: PretrainConfig, *, dataset: str = "semeval", data_path: str | None = None, k: int = 8,
                    seed: int = 1, protocol: str = "knowprompt", explanations: str | None = None,
                    synthetic: str | None = None, out_dir, show_progress: bool = False) -> dict:
    """Both stages on a K-shot split: stage 1 -> out_dir/stage1, stage 2 (from stage 1) -> out_dir/stage2.
    `explanations` / `synthetic` are the generation step's output folders or files (optional)."""
    from tkre.data import load_dataset, sample_kshot

    ds = load_dataset(dataset, data_path)
    golden = sample_kshot(ds, k=k, seed=seed, protocol=protocol).train
    expl = synth = None
    if explanations or synthetic:
        from tkre.generate import read_explanations, read_synthetic

        expl = read_explanations(explanations) if explanations else None
        synth = read_synthetic(synthetic) if synthetic else None
    out_dir = Path(out_dir)
    init_ray()
    bar = nullcontext()
    if show_progress:
        from tkre.console import ProgressBar

        bar = ProgressBar("pre-training")
    with bar:  # the train loop sends its step/epoch progress to the bar's channel
        progress.emit(stage="stage 1 (MSLM)")
        s1 = pretrain_stage1(cfg, init=cfg.encoder, golden=golden, explanations=expl, out_dir=out_dir / "stage1")
        progress.emit(stage="stage 2 (MSLM+SCL)")
        s2 = pretrain_stage2(cfg, init=s1["checkpoint"], golden=golden, synthetic=synth, relations=ds.relations,
                             out_dir=out_dir / "stage2")
    summary = {"checkpoint": s2["checkpoint"], "stage1": s1, "stage2": s2, "dataset": dataset, "k": k,
               "seed": seed, "protocol": protocol, "golden": len(golden)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary

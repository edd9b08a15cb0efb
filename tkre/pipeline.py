"""One experiment = one pipeline: K-shot split -> EDKG -> SCDG -> stage-1 -> stage-2 -> fine-tune -> test.

    row = run_experiment(ExperimentConfig(...), variant="tkre")   # one tkre.results.ResultRow

Every stage's output is an artifact in `tkre.store.artifacts.ArtifactStore` under
`key = hash(the config fields that affect the stage, the keys of its inputs, tkre version)`, so a
trial whose upstream stages match an earlier trial reuses them (a seed sweep over fine-tuning reuses
one generation run; a tau sweep reuses stage 1). Stages are switched by `cfg.stages` (Table 3):

    TKRE            all on                  w/o EDKG   stages.edkg=false (no corpus -> no stage 1)
    w/o SCDG        stages.scdg=false       w/o MSLM   pretrain.masking=bert
    w/o SCL         pretrain.scl.lambda2=0     golden only: every stage off (fine-tune on golden data)

The row (`tkre.results.ResultRow`, the one results schema) is traceable: the full config (JSON),
dataset name + data hash, EDKG and SCDG generators (+ their `edkg.*` / `scdg.*` statistics), encoder,
backbone, seed, synthetic samples asked/kept/used, tkre version, dev/test micro-F1 (fractions 0-1),
each stage's artifact key, whether it was reused, and seconds per stage. Ray Train runs (pre-training, fine-tuning) are named after the
artifact key under `<storage>/train`, so a killed trial resumes them from their last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tkre.store.artifacts import (Artifact, ArtifactStore, artifact_key, is_remote, join_uri, local_path,
                            resolve_filesystem)
from tkre.config import (DataConfig, EDKGConfig, ExperimentConfig, FinetuneConfig, GeneratorConfig, PretrainConfig,
                         SCDGConfig)
from tkre.data import from_arrow, load_from_config, sample_kshot, to_arrow
from tkre.data.records import RelationExample
from tkre.errors import DataError
from tkre.results import STAGES, ResultRow
from tkre.generate.controls import control_key_config
from tkre.synthetic_stage import synthetic_artifact

log = logging.getLogger(__name__)

# Config fields that do not change a stage's output (throughput, places, retries, failure tolerance, prices):
# left out of keys.
_GEN_NOT_IN_KEY = {"concurrency": True, "cache_dir": True, "batch_size": True, "max_error_fraction": True,
                   "cpus_per_actor": True,
                   "price_per_m_input_tokens": True, "price_per_m_output_tokens": True,
                   "vllm": {"num_replicas", "batch_size", "gpu_memory_utilization", "accelerator_type"},
                   "openai": {"timeout_s", "max_retries", "concurrency", "api_key_env"}}
_STAGE2_ONLY = {"stage2", "scl"}


def generator_key_config(gen: GeneratorConfig) -> dict:
    return gen.model_dump(exclude=_GEN_NOT_IN_KEY)


def edkg_key_config(edkg: EDKGConfig) -> dict:
    """What changes the explanation corpus: EDKG's generator and its own settings (nothing of SCDG's)."""
    return {**edkg.model_dump(exclude={"generator"}), "generator": generator_key_config(edkg.generator)}


def scdg_key_config(scdg: SCDGConfig) -> dict:
    """What changes the synthetic set: SCDG's generator, its settings and the samples asked (an
    experiment's section: every default filled in)."""
    return {**scdg.model_dump(exclude={"generator", "samples_per_relation", "max_new_tokens", "tokens_per_sample",
                                       "source"}),  # a control's key is built on this one (synthetic_stage.py)
            "new_tokens": scdg.new_tokens, "samples_per_relation": scdg.samples_per_relation,
            "generator": generator_key_config(scdg.generator)}


def split_key_config(data: DataConfig) -> dict:
    """What changes the K-shot split besides the files (their hash is the split's input): dataset, K, seed, protocol."""
    return data.model_dump(exclude={"path", "patch_path"})


def finetune_key_config(ft: FinetuneConfig, *, from_pretraining: bool) -> dict:
    """What changes a fine-tuning run (its encoder is the pre-training input when there is one)."""
    out = ft.model_dump(exclude={"resources", "eval_ray_data_min_examples", "eval_actors", "eval_batch_size",
                                 "budget"})
    if ft.budget.mode != "epochs":  # the budget replaces the epochs (a fixed-epochs run keeps the keys it had)
        out.pop("epochs")
        out["budget"] = ft.budget.model_dump(include={"mode", "steps"} if ft.budget.mode == "steps" else
                                             {"mode", "patience", "max_epochs"})
    if ft.eval_every_steps is None:  # after every epoch, as before the setting existed: the same keys
        out.pop("eval_every_steps")
    if from_pretraining:
        out.pop("encoder")
    return out


def stage1_key_config(p: PretrainConfig) -> dict:
    return p.model_dump(exclude={"resources", *_STAGE2_ONLY})


def stage2_key_config(p: PretrainConfig) -> dict:
    return p.model_dump(exclude={"resources", "stage1"})


class StageKey(NamedTuple):
    """One stage's place in the stage graph: its artifact key and what the key is made of."""

    key: str
    config: dict  # the config fields that change the stage's output (kept in the artifact's manifest)
    inputs: dict[str, str]  # upstream artifact keys (and the dataset files' hash)


def stage_graph(cfg: ExperimentConfig, data_hash: str) -> dict[str, StageKey]:
    """stage -> StageKey of every stage `cfg` runs, in pipeline order: the one place that says which
    config fields and upstream keys make each stage's artifact key. `run_experiment` stores artifacts
    under these keys (`data_hash`: the dataset files' hash) and `tkre sweep --plan` predicts reuse
    with them (a stand-in hash, unknown before the files are read)."""
    out: dict[str, StageKey] = {}

    def add(stage: str, config: dict, inputs: dict[str, str]) -> str:
        out[stage] = StageKey(artifact_key(stage, config, inputs), config, inputs)
        return out[stage].key

    split = {"split": add("split", split_key_config(cfg.data), {"data": data_hash})}
    if cfg.stages.edkg:
        add("edkg", edkg_key_config(cfg.edkg), split)
    if cfg.stages.scdg:  # SCDG's samples, or a control stored in their place (tkre/synthetic_stage.py)
        generated = add("scdg", scdg_key_config(cfg.scdg), split)  # `llm`: keyed as SCDG always was
        source = cfg.scdg.source
        if source != "llm":  # oracle: real examples (the data files); shuffled/golden_repeat: built on `generated`
            if source != "oracle":
                out["generated"] = out["scdg"]
            add("scdg", control_key_config(source, cfg.synthetic_asked_per_relation()),
                {**split, **({"data": data_hash} if source == "oracle" else {"generated": generated})})
    scdg = {"scdg": out["scdg"].key} if "scdg" in out else {}
    init = None  # the key of the pre-training stage the next one starts from
    if cfg.stages.pretrain_stage1 and cfg.stages.edkg:  # stage 1 needs the EDKG corpus
        init = add("stage1", stage1_key_config(cfg.pretrain), {"edkg": out["edkg"].key, **split})
    if cfg.stages.pretrain_stage2:
        init = add("stage2", stage2_key_config(cfg.pretrain), {**split, "init": init or cfg.pretrain.encoder, **scdg})
    if cfg.stages.finetune:
        add("finetune", finetune_key_config(cfg.finetune, from_pretraining=init is not None),
            {**split, "data": data_hash, **({"init": init} if init else {}), **scdg})
    return out


def stage_keys(cfg: ExperimentConfig, data_hash: str) -> dict[str, str]:
    """stage -> artifact key of every stage `cfg` runs (`stage_graph`'s keys)."""
    return {stage: node.key for stage, node in stage_graph(cfg, data_hash).items()}


def train_storage(storage: str) -> str:
    """Where Ray Train keeps run checkpoints (a URI stays a URI)."""
    return join_uri(storage, "train") if is_remote(storage) else str(local_path(storage) / "train")


def drop_train_runs(runs: str, *run_names: str) -> None:
    """Delete Ray Train run folders under `runs` (`train_storage`) once their stage's artifact is stored.

    A run folder holds the epoch checkpoints Train keeps (the best and the latest, each with optimizer
    state: ~700 MB for one MiniLM fine-tuning); they serve only to resume a run that was interrupted,
    and the artifact has a copy of the model the run produced. Kept, they add up: 55 GB under
    `~/tkre_runs/train` after issue 16's 30-trial study and its searches. A failed delete is a warning:
    the trial's result is already safe."""
    for name in run_names:
        target = join_uri(runs, name) if is_remote(runs) else str(Path(runs) / name)
        try:
            if is_remote(runs):
                fs, path = resolve_filesystem(target)
                if fs.get_file_info(path).type != pafs.FileType.NotFound:
                    fs.delete_dir(path)
            elif os.path.isdir(target):
                shutil.rmtree(target)
        except Exception as e:  # noqa: BLE001 -- cleanup must not fail a finished stage
            log.warning("could not delete the Train run folder %s (%s); its artifact is stored", target, e)


def _read_examples(path: Path) -> list[RelationExample]:
    return from_arrow(pq.read_table(path))


def _write_examples(examples: list[RelationExample], path: Path) -> None:
    pq.write_table(to_arrow(examples), path)


def _in_slot(store: ArtifactStore, fn: Callable, *args, **kwargs):
    """Run an LLM generation job while holding a cluster-wide "generation" slot (see ArtifactStore.slot)."""
    with store.slot("generation"):
        return fn(*args, **kwargs)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 3)


def run_experiment(cfg: ExperimentConfig, *, callbacks: list | None = None,
                   store: ArtifactStore | None = None, variant: str | None = None) -> ResultRow:
    """Run every enabled stage (reusing stored artifacts) and return its results row.

    `variant` is the sweep file's variant name, carried into the row (None outside sweeps).

    `callbacks` go to the fine-tuning Ray Train run only (e.g. Tune's TuneReportCallback, so that
    ASHA sees dev micro-F1 once per fine-tuning epoch)."""
    t_start = time.perf_counter()
    store = store or ArtifactStore(cfg.storage_path)
    timer = _Timer()
    arts: dict[str, Artifact] = {}

    t0 = time.perf_counter()
    dataset = load_from_config(cfg.data)
    timer.add("load", time.perf_counter() - t0)

    graph = stage_graph(cfg, dataset.data_hash)  # every stage's key, config and inputs

    # ---------------------------------------------------------------- K-shot split
    def build_split(out: Path) -> dict:
        split = sample_kshot(dataset, cfg.data.k, cfg.data.seed, cfg.data.protocol)
        _write_examples(split.train, out / "train.parquet")
        if cfg.data.protocol == "genpt":
            _write_examples(split.dev, out / "dev.parquet")
        return {"train": len(split.train), "dev": len(split.dev), "test": len(split.test),
                "missing_relations": split.missing_relations, "dataset": dataset.name}

    key, split_cfg, inputs = graph["split"]
    arts["split"] = store.get_or_create("split", key, build_split, config=split_cfg, inputs=inputs)
    golden = _read_examples(arts["split"].path / "train.parquet")
    dev_file = arts["split"].path / "dev.parquet"
    dev = _read_examples(dev_file) if dev_file.is_file() else dataset.split("dev")
    test = dataset.split("test")
    if not golden:
        raise DataError("the K-shot training split is empty", file=str(arts["split"].path))
    relations_in_split = sorted({ex.relation for ex in golden})

    # ---------------------------------------------------------------- generation
    gen_cache = str(store.local_root.parent / "generation_cache")

    def with_cache(gen: GeneratorConfig) -> GeneratorConfig:
        return gen if gen.cache_dir else gen.model_copy(update={"cache_dir": gen_cache})

    if cfg.stages.edkg:
        from tkre.generate import generate_explanations

        edkg = cfg.edkg.model_copy(update={"generator": with_cache(cfg.edkg.generator)})
        node = graph["edkg"]
        arts["edkg"] = store.get_or_create(
            "edkg", node.key, lambda out: _in_slot(store, generate_explanations, golden, edkg, out),
            config=node.config, inputs=node.inputs)
    if cfg.stages.scdg:
        arts["scdg"] = synthetic_artifact(cfg, graph, store, dataset=dataset, golden=golden, dev=dev,
                                          relations=relations_in_split, gen_cache=gen_cache)
    synthetic = None
    if "scdg" in arts:
        from tkre.generate import read_synthetic

        synthetic = read_synthetic(arts["scdg"].path)

    # ---------------------------------------------------------------- pre-training
    runs = train_storage(cfg.storage_path)
    init, init_key = cfg.pretrain.encoder, None
    if "stage1" in graph:
        from tkre.generate import read_explanations
        from tkre.pretrain import pretrain_stage1
        from tkre.pretrain.stages import head_warmup_run_name

        key, s1_cfg, inputs = graph["stage1"]
        explanations = read_explanations(arts["edkg"].path)
        arts["stage1"] = store.get_or_create(
            "stage1", key, lambda out: pretrain_stage1(
                cfg.pretrain, init=init, golden=golden, explanations=explanations, out_dir=out,
                run_name=f"stage1-{key}", storage_path=runs), config=s1_cfg, inputs=inputs)
        drop_train_runs(runs, f"stage1-{key}", head_warmup_run_name(f"stage1-{key}"))
        init, init_key = store.ref("stage1", key, "checkpoint"), key  # a reference: Train workers may be elsewhere
    elif cfg.stages.pretrain_stage1:
        log.info("stage-1 pre-training skipped: it needs the EDKG corpus (stages.edkg is off)")
    if cfg.stages.pretrain_stage2:
        from tkre.pretrain import pretrain_stage2

        key, s2_cfg, inputs = graph["stage2"]
        stage2_init = init
        arts["stage2"] = store.get_or_create(
            "stage2", key, lambda out: pretrain_stage2(
                cfg.pretrain, init=stage2_init, golden=golden, synthetic=synthetic, relations=dataset.relations,
                out_dir=out, run_name=f"stage2-{key}", storage_path=runs), config=s2_cfg, inputs=inputs)
        drop_train_runs(runs, f"stage2-{key}")
        init, init_key = store.ref("stage2", key, "checkpoint"), key

    # ---------------------------------------------------------------- fine-tuning + test
    if not cfg.stages.finetune:  # generation-only mode (and pre-training without fine-tuning): no F1
        return _finish(cfg, variant, dataset, relations_in_split, arts, timer, t_start)
    from tkre.finetune import run_finetune

    if note := cfg.finetune.recipe_note():  # lr/epochs/batch fitting an embedded encoder
        log.info("%s", note)
    key, ft_cfg, inputs = graph["finetune"]
    ft_synthetic = synthetic if cfg.finetune.synthetic_cap_per_relation != 0 else None
    arts["finetune"] = store.get_or_create(
        "finetune", key, lambda out: run_finetune(
            cfg.finetune, init=init if init_key else None, train=golden, dev=dev, test=test,
            relations=dataset.relations, no_relation=dataset.no_relation,
            synthetic=ft_synthetic, out_dir=out, run_name=f"finetune-{key}", storage_path=runs,
            callbacks=callbacks), config=ft_cfg, inputs=inputs)
    drop_train_runs(runs, f"finetune-{key}")
    return _finish(cfg, variant, dataset, relations_in_split, arts, timer, t_start)


def _finish(cfg: ExperimentConfig, variant: str | None, dataset, relations: list[str], arts: dict[str, Artifact],
            timer: _Timer, t_start: float) -> ResultRow:
    for name, art in arts.items():
        timer.add(name, art.seconds)
    timer.add("total", time.perf_counter() - t_start)
    return results_row(cfg, variant=variant, dataset_name=dataset.name, data_hash=dataset.data_hash,
                       relations=len(relations), artifacts=arts, seconds=timer.seconds,
                       no_relation=dataset.no_relation)


def generation_stats(cfg: ExperimentConfig, artifacts: dict[str, Artifact], role: str) -> dict[str, Any]:
    """The `edkg.<stat>` / `scdg.<stat>` columns of one generation artifact's summary (tkre.generate.stats)."""
    from tkre.generate.stats import role_stats

    if role not in artifacts or (role == "scdg" and cfg.scdg.source != "llm"):  # a control generates nothing
        return {}
    gen = cfg.edkg.generator if role == "edkg" else cfg.scdg.generator
    stats = role_stats(role, artifacts[role].summary, backend=gen.backend, base_url=gen.openai.base_url,
                       price_in=gen.price_per_m_input_tokens, price_out=gen.price_per_m_output_tokens)
    if not stats["price_known"]:
        log.warning("WARNING: %s bills per token but %s.generator has no price_per_m_input_tokens/"
                    "price_per_m_output_tokens: its cost is reported as unknown (tkre compare-generators "
                    "refuses to start without them)", gen.name, role)
    return stats


def results_row(cfg: ExperimentConfig, *, variant: str | None, dataset_name: str, data_hash: str, relations: int,
                artifacts: dict[str, Artifact], seconds: dict[str, float], no_relation: str | None = None
                ) -> ResultRow:
    """The typed results row of one experiment, from the stages' stored summaries (generation-only
    runs, `stages.finetune: false`, have no F1). The class micro-F1 left out is what the fine-tuning
    metrics name; a summary stored before they named it scored without the dataset's `no_relation`."""
    metrics = artifacts["finetune"].summary if "finetune" in artifacts else {}
    pretrained = "stage1" in artifacts or "stage2" in artifacts
    edkg, scdg = artifacts.get("edkg"), artifacts.get("scdg")
    return ResultRow(
        experiment=cfg.name, variant=variant, dataset=dataset_name, data_hash=data_hash, k=cfg.data.k,
        seed=cfg.data.seed, protocol=cfg.data.protocol, backbone=cfg.finetune.backbone,
        encoder=cfg.pretrain.encoder if pretrained else cfg.finetune.encoder,
        masking=cfg.pretrain.masking if pretrained else None,
        edkg_generator=edkg.summary["generator"] if edkg else None,
        scdg_generator=scdg.summary["generator"] if scdg else None, synthetic_source=cfg.scdg.source if scdg else None,
        relations=relations, synthetic_asked=cfg.synthetic_asked_per_relation() * relations if scdg else 0,
        synthetic_kept=scdg.summary["counts"]["kept"] if scdg else 0,
        synthetic_used=metrics["counts"]["synthetic_used"] if metrics else 0,
        dev_micro_f1=metrics.get("dev_micro_f1"), dev_macro_f1=metrics.get("dev_macro_f1"),
        test_micro_f1=metrics.get("test_micro_f1"), test_macro_f1=metrics.get("test_macro_f1"),
        metric_excluded_label=metrics.get("metric_excluded_label", no_relation) if metrics else None,
        best_epoch=metrics.get("best_epoch"), finetune_budget=metrics.get("budget"),
        finetune_steps=metrics.get("steps"), finetune_epochs_run=metrics.get("epochs_run"),
        best_step=metrics.get("best_step"), stopped_on_patience=metrics.get("stopped_on_patience"),
        epoch_history=json.dumps(metrics.get("history", [])),
        pretrain_history=json.dumps({s: artifacts[s].summary.get("history", []) for s in ("stage1", "stage2")
                                     if s in artifacts}),
        experiment_config=cfg.model_dump_json(),  # not "config": Tune reserves that result key
        artifact={s: (a.key if (a := artifacts.get(s)) else None) for s in STAGES},
        reused={s: (a.reused if (a := artifacts.get(s)) else None) for s in STAGES},
        seconds=dict(seconds), edkg=generation_stats(cfg, artifacts, "edkg"),
        scdg=generation_stats(cfg, artifacts, "scdg"))


def run_experiment_file(path: str, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`tkre run <config.yaml>`: load an ExperimentConfig (file:line errors), run it, write the row."""
    from tkre.io import atomic_write_json
    from tkre.overrides import load_with_overrides

    cfg = load_with_overrides(path, ExperimentConfig, overrides=overrides)
    from tkre.store.artifacts import check_storage_writable

    check_storage_writable(cfg.storage_path, min_free_gb=0.1)
    row = run_experiment(cfg).to_flat()
    if not is_remote(cfg.storage_path):
        out = local_path(cfg.storage_path) / "runs" / f"{cfg.name}-{row['artifact.finetune']}.json"
        atomic_write_json(out, row)
        row["row_file"] = str(out)
    return row

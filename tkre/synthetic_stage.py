"""The pipeline's synthetic-set stage for every `scdg.source`: SCDG's generation (`llm`), or a control
(tkre/generate/controls.py) stored in SCDG's place, so that stage 2 and fine-tuning take it as they take
generated samples and every downstream key follows it.

Keys (made in `tkre.pipeline.stage_graph`, stage `scdg`): `llm` is keyed as SCDG always was (a sweep's TKRE and its
controls share one generation); `oracle` by its source, the samples asked, the split and the dataset
files; `shuffled` and `golden_repeat` by their source, the samples asked, the split and the generated
set they are built on (the `generated` node: the very artifact `llm` would store).
"""

from __future__ import annotations

from tkre.config import ExperimentConfig
from tkre.data import relation_type_schema
from tkre.data.records import RelationExample
from tkre.generate.controls import FROM_GENERATED, build_control
from tkre.store.artifacts import Artifact, ArtifactStore

def synthetic_artifact(cfg: ExperimentConfig, graph: dict, store: ArtifactStore, *, dataset,
                       golden: list[RelationExample], dev: list[RelationExample], relations: list[str],
                       gen_cache: str) -> Artifact:
    """The `scdg` artifact of `graph` (`tkre.pipeline.stage_graph`), generating first where it needs to."""
    from tkre.generate import generate_synthetic, read_synthetic

    per_relation = cfg.synthetic_asked_per_relation()

    def generated(node: str) -> Artifact:
        gen = cfg.scdg.generator
        scdg = cfg.scdg.model_copy(update={"generator": gen if gen.cache_dir else gen.model_copy(
            update={"cache_dir": gen_cache})})

        def build(out):
            with store.slot("generation"):  # one cluster-wide generation slot (ArtifactStore.slot)
                return generate_synthetic(golden, relation_type_schema(golden), scdg, out, relations=relations)

        key, config, inputs = graph[node]
        return store.get_or_create("scdg", key, build, config=config, inputs=inputs)

    source = cfg.scdg.source
    if source == "llm":
        return generated("scdg")
    base = generated("generated") if source in FROM_GENERATED else None
    key, config, inputs = graph["scdg"]
    return store.get_or_create("scdg", key, lambda out: build_control(
        source, out, golden=golden, relations=relations, per_relation=per_relation, seed=cfg.data.seed,
        pool=dataset.split("train") if source == "oracle" else (), exclude_ids={ex.id for ex in [*golden, *dev]},
        generated=read_synthetic(base.path) if base else (), generator=base.summary["generator"] if base else None),
        config=config, inputs=inputs)

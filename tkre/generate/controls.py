"""Controls for the synthetic set (`scdg.source`): what SCDG's kept samples are measured against.

    llm            the generator's kept samples (the method; SCDG proper)
    oracle         N real training examples per relation from outside the K-shot split (and outside a dev
                   set drawn from train), drawn by the split's seed: the best any generator could give;
                   with pre-training off it is the paper's extra-golden-data curve (Fig. 6)
    shuffled       the generator's kept samples with their labels permuted across the samples (seeded):
                   the same extra text without its label knowledge
    golden_repeat  golden examples repeated, per relation, to as many as the generator kept: the same
                   extra optimizer steps on no new text

Each is written as SCDG writes its kept samples (`synthetic.parquet` through `write_synthetic`, a summary
with `counts.kept`), so stage 2 and fine-tuning read a control exactly as they read generated samples.
Why: a gain from synthetic samples could be the generator's knowledge, extra text, or extra steps; these
sources take one of those away at a time.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from tkre import __version__
from tkre.data.records import RelationExample
from tkre.generate.outputs import SYNTHETIC_FILE, write_synthetic
from tkre.io import stable_hash

log = logging.getLogger(__name__)

CONTROL_SOURCES = ("oracle", "shuffled", "golden_repeat")
#: the sources built from the generator's kept samples (they need the `llm` set first)
FROM_GENERATED = ("shuffled", "golden_repeat")


def control_key_config(source: str, samples_per_relation: int) -> dict:
    """What changes a control set besides its inputs (the split; the dataset files for oracle; the
    generated set for the others): the source and the samples asked per relation."""
    return {"source": source, "samples_per_relation": samples_per_relation}


def oracle_samples(pool: Sequence[RelationExample], exclude_ids: set[str], relations: Sequence[str],
                   per_relation: int, seed: int) -> tuple[list[RelationExample], dict[str, int]]:
    """Up to `per_relation` examples of each relation from `pool` (the dataset's train split) whose ids
    are not in `exclude_ids` (the K-shot split, a dev set drawn from train), ordered per relation by a
    hash of (seed, id): the same seed draws the same examples. Returns (examples, relations short)."""
    by_rel: dict[str, list[RelationExample]] = defaultdict(list)
    for ex in pool:
        if ex.id not in exclude_ids:
            by_rel[ex.relation].append(ex)
    out, short = [], {}
    for rel in relations:
        drawn = sorted(by_rel.get(rel, []), key=lambda ex: stable_hash([seed, "oracle", ex.id]))[:per_relation]
        short.update({rel: len(drawn)} if len(drawn) < per_relation else {})
        out += [replace(ex, id=f"oracle-{ex.id}", source="synthetic:oracle") for ex in drawn]
    return out, short


def shuffled_labels(samples: Sequence[RelationExample], seed: int) -> list[RelationExample]:
    """`samples` with their relation labels permuted among them (a seeded shuffle of the label column:
    every relation keeps its count, a sample's label no longer says what its text holds)."""
    labels = [ex.relation for ex in samples]
    random.Random(stable_hash([seed, "shuffled"])).shuffle(labels)
    return [replace(ex, relation=label, source=f"synthetic:shuffled:{ex.source.removeprefix('synthetic:')}")
            for ex, label in zip(samples, labels)]


def golden_repeat(golden: Sequence[RelationExample], samples: Sequence[RelationExample]) -> list[RelationExample]:
    """Per relation, golden examples cycled to as many copies as `samples` (the generated set) holds of
    that relation; each copy gets its own id."""
    by_rel: dict[str, list[RelationExample]] = defaultdict(list)
    for ex in golden:
        by_rel[ex.relation].append(ex)
    wanted: dict[str, int] = defaultdict(int)
    for ex in samples:
        wanted[ex.relation] += 1
    out = []
    for rel, n in wanted.items():
        pool = by_rel.get(rel, [])
        out += [replace(pool[i % len(pool)], id=f"repeat{i}-{pool[i % len(pool)].id}", source="synthetic:golden_repeat")
                for i in range(n if pool else 0)]
    return out


def build_control(source: str, out_dir: Path, *, golden: Sequence[RelationExample], relations: Sequence[str],
                  per_relation: int, seed: int, pool: Sequence[RelationExample] = (),
                  exclude_ids: set[str] | None = None, generated: Sequence[RelationExample] = (),
                  generator: str | None = None) -> dict[str, Any]:
    """Write the control set `source` to `out_dir` as SCDG writes its kept samples; return its summary
    (`generator` names the control, and the generator its samples came from where there is one)."""
    short: dict[str, int] = {}
    if source == "oracle":
        examples, short = oracle_samples(pool, set(exclude_ids or ()), relations, per_relation, seed)
        if short:
            log.warning("oracle source: %d relation(s) have fewer than %d training examples outside the split: %s",
                        len(short), per_relation, ", ".join(f"{r} ({n})" for r, n in short.items()))
    elif source == "shuffled":
        examples = shuffled_labels(generated, seed)
    elif source == "golden_repeat":
        examples = golden_repeat(golden, generated)
    else:
        raise ValueError(f"unknown synthetic source {source!r} (known: {', '.join(CONTROL_SOURCES)})")
    write_synthetic(examples, [], out_dir)
    kept = defaultdict(int)
    for ex in examples:
        kept[ex.relation] += 1
    return {"kind": "synthetic", "source": source, "tkre_version": __version__, "file": SYNTHETIC_FILE,
            "generator": f"{source}({generator})" if generator and source in FROM_GENERATED else source,
            "per_relation": per_relation, "relations_short": short, "kept_per_relation": dict(sorted(kept.items())),
            "counts": {"relations": len(relations), "kept": len(examples)}}

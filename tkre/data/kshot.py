"""K-shot sampling, two named protocols. A split is a pure function of (data, protocol, K, seed).

- `knowprompt` (KnowPrompt's generate_k_shot.py, used for TKRE's splits): the train list in file
  order is shuffled in place once per seed 1, 2, ..., s (`np.random.seed(i); np.random.shuffle`),
  cumulatively; the first K examples of each label are taken; labels are written in order of first
  appearance, examples in shuffled order. Dev and test are kept whole.
- `genpt` (LM-BFF / GenPT): a fresh permutation of train with `np.random.seed(seed)`; the first K
  of each label form train, the next K of each label form dev; test is kept whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tkre.data.dataset import Dataset
from tkre.data.records import RelationExample
from tkre.errors import DataError


@dataclass
class KShotSplit:
    protocol: str
    k: int
    seed: int
    train: list[RelationExample]
    dev: list[RelationExample]
    test: list[RelationExample]
    missing_relations: list[str]  # relations of the label set with no train example


def _first_k_per_label(examples: list[RelationExample], k: int, skip: int = 0) -> list[RelationExample]:
    """Examples [skip, skip+k) of each label, grouped by label in order of first appearance."""
    by_label: dict[str, list[RelationExample]] = {}
    for ex in examples:
        by_label.setdefault(ex.relation, []).append(ex)
    return [ex for group in by_label.values() for ex in group[skip:skip + k]]


def knowprompt_order(train: list[RelationExample], seed: int) -> list[RelationExample]:
    """The train list after the cumulative shuffles for seeds 1..seed."""
    if seed < 1:
        raise DataError(f"knowprompt seeds start at 1 (got {seed})", field="seed")
    items = list(train)
    for s in range(1, seed + 1):
        np.random.seed(s)
        np.random.shuffle(items)
    return items


def sample_kshot(dataset: Dataset, k: int, seed: int, protocol: str = "knowprompt") -> KShotSplit:
    if not isinstance(k, int) or k <= 0:
        raise DataError(f"K must be a positive integer (got {k})", field="k")
    train = dataset.split("train")
    if not train:
        raise DataError("the train split is empty", file=dataset.files[0] if dataset.files else None)
    if protocol == "knowprompt":
        shot = _first_k_per_label(knowprompt_order(train, seed), k)
        dev = dataset.split("dev")
    elif protocol == "genpt":
        rng = np.random.RandomState(seed)
        order = [train[i] for i in rng.permutation(len(train))]
        shot = _first_k_per_label(order, k)
        dev = _first_k_per_label(order, k, skip=k)
    else:
        raise DataError(f"unknown K-shot protocol {protocol!r} (known: knowprompt, genpt)", field="protocol")
    present = {ex.relation for ex in shot}
    missing = [r for r in dataset.relations if r not in present]
    return KShotSplit(protocol, k, seed, shot, dev, dataset.split("test"), missing)


def relation_type_schema(examples: list[RelationExample]) -> dict[str, list[list[str]]]:
    """Per relation, the sorted (subject type, object type) pairs seen in `examples`."""
    pairs: dict[str, set[tuple[str, str]]] = {}
    for ex in examples:
        entry = pairs.setdefault(ex.relation, set())
        if ex.subj_type and ex.obj_type:
            entry.add((ex.subj_type, ex.obj_type))
    return {rel: [list(p) for p in sorted(v)] for rel, v in sorted(pairs.items())}

"""Relation-classification metrics. Scores are fractions in [0, 1].

Micro-F1 follows the TACRED scorer: predictions of the no-relation class count as "no guess";
precision = correct non-NA predictions / non-NA predictions, recall = correct / non-NA gold.
A label set without a no-relation class (`no_relation=None`) excludes nothing: micro-F1 over all
classes. The scores name what they excluded (`excluded_label`), so a result says which it was.
Gold labels the model has no class for (labels only dev/test carry) are scored like any other:
never predicted, they are misses that lower recall.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence, Union

from tkre.data.records import NO_RELATION_NAMES


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def classification_scores(gold: Sequence[str], pred: Sequence[str],
                          no_relation: Union[str, None, Sequence[str]] = NO_RELATION_NAMES) -> dict:
    """micro_f1/precision/recall without the no-relation class, macro_f1 over the other relations
    present in gold or predictions, per-relation P/R/F1/support, and accuracy over all examples.

    `no_relation`: the class to leave out (a dataset's `no_relation`), None to leave out nothing, or
    a list of names (default: every name `NO_RELATION_NAMES` knows). `excluded_label` in the result
    is the class left out -- the given one, or the names of the list that occur, comma-joined -- or
    None when nothing was."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if no_relation is None:
        na: set[str] = set()
        excluded = None
    elif isinstance(no_relation, str):
        na, excluded = {no_relation}, no_relation
    else:
        na = set(no_relation)
        excluded = ",".join(sorted(na & (set(gold) | set(pred)))) or None
    correct = Counter(g for g, p in zip(gold, pred) if g == p and g not in na)
    gold_n = Counter(g for g in gold if g not in na)
    pred_n = Counter(p for p in pred if p not in na)
    tp, n_pred, n_gold = sum(correct.values()), sum(pred_n.values()), sum(gold_n.values())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    per_relation = {}
    for rel in sorted(set(gold_n) | set(pred_n)):
        p = correct[rel] / pred_n[rel] if pred_n[rel] else 0.0
        r = correct[rel] / gold_n[rel] if gold_n[rel] else 0.0
        per_relation[rel] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": gold_n[rel]}
    macro = sum(v["f1"] for v in per_relation.values()) / len(per_relation) if per_relation else 0.0
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    return {"micro_f1": _f1(precision, recall), "micro_precision": precision, "micro_recall": recall,
            "macro_f1": macro, "accuracy": accuracy, "n": len(gold), "per_relation": per_relation,
            "excluded_label": excluded}

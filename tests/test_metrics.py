"""Metrics against hand-computed cases."""

import pytest

from tkre.metrics import classification_scores


def test_micro_f1_excludes_no_relation_hand_computed():
    gold = ["A", "A", "B", "Other", "Other", "B"]
    pred = ["A", "B", "B", "A", "Other", "Other"]
    s = classification_scores(gold, pred)
    # non-Other predictions: A, B, B, A -> 4 guesses, correct: A (0), B (2) -> 2
    # non-Other gold: A, A, B, B -> 4; precision = 2/4, recall = 2/4
    assert s["micro_precision"] == pytest.approx(0.5)
    assert s["micro_recall"] == pytest.approx(0.5)
    assert s["micro_f1"] == pytest.approx(0.5)
    # A: pred 2 (1 correct) p=.5, gold 2 r=.5, f1=.5; B: pred 2 (1 correct) p=.5, gold 2 r=.5 -> macro .5
    assert s["per_relation"]["A"] == pytest.approx({"precision": .5, "recall": .5, "f1": .5, "support": 2})
    assert s["macro_f1"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(3 / 6)


def test_asymmetric_case_and_aliases():
    gold = ["r1", "r1", "r1", "no_relation", "r2"]
    pred = ["r1", "NA", "r2", "r2", "r2"]
    s = classification_scores(gold, pred)
    # guesses (non-NA): r1, r2, r2, r2 = 4; correct: r1, r2 = 2 -> P = .5; gold non-NA = 4 -> R = .5
    assert s["micro_f1"] == pytest.approx(0.5)
    # r1: P=1, R=1/3 -> F1=.5 ; r2: P=1/3, R=1 -> F1=.5
    assert s["per_relation"]["r1"]["f1"] == pytest.approx(0.5)
    assert s["per_relation"]["r2"]["precision"] == pytest.approx(1 / 3)
    assert "no_relation" not in s["per_relation"] and "NA" not in s["per_relation"]


def test_all_no_relation_predictions_score_zero():
    s = classification_scores(["A", "Other"], ["Other", "Other"])
    assert s["micro_f1"] == 0.0 and s["micro_precision"] == 0.0


def test_perfect_and_length_mismatch():
    assert classification_scores(["A", "B"], ["A", "B"])["micro_f1"] == 1.0
    with pytest.raises(ValueError):
        classification_scores(["A"], [])


def test_no_no_relation_class_scores_over_all_classes_and_says_so():
    # a label set without a no-relation class: a relation that happens to be called "Other" in
    # someone's data is a relation like any other once the caller says there is none
    gold = ["A", "B", "Other", "C"]
    pred = ["A", "A", "Other", "C"]
    s = classification_scores(gold, pred, None)
    assert s["micro_precision"] == pytest.approx(3 / 4) and s["micro_recall"] == pytest.approx(3 / 4)
    assert s["excluded_label"] is None and "Other" in s["per_relation"]
    # the dataset's own class: only it is left out, and the scores name it
    s = classification_scores(gold, pred, "Other")
    assert s["micro_f1"] == pytest.approx(2 / 3) and s["excluded_label"] == "Other"
    assert classification_scores(gold, pred)["excluded_label"] == "Other"  # default: the known names present
    assert classification_scores(["A"], ["A"])["excluded_label"] is None


def test_gold_label_without_a_model_class_is_a_miss():
    # "D" only test carries: the model cannot predict it, so it lowers recall and nothing else
    s = classification_scores(["A", "B", "D"], ["A", "B", "A"], None)
    assert s["micro_recall"] == pytest.approx(2 / 3) and s["micro_precision"] == pytest.approx(2 / 3)
    assert s["per_relation"]["D"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}

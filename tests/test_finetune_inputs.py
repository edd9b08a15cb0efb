"""Fine-tuning input building (pure): windowing, TYP Marker markers, GenPT template and scoring,
training-set selection, metrics with unseen relations. Tiny encoder, no Ray."""

from __future__ import annotations

import pytest
import torch

from tkre.data.records import RelationExample
from tkre.errors import ConfigError, DataError
from tkre.finetune import genpt, typ_marker
from tkre.finetune.evaluate import constant_baselines, predict, score_predictions
from tkre.finetune.inputs import load_tokenizer, window_ranges
from tkre.finetune.run import select_training_set
from tkre.finetune.spec import FinetuneSpec, load_checkpoint

RELS = ["Other", "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"]


def ex(i, tokens, s, o, rel="Cause-Effect(e1,e2)", st=None, ot=None, source="golden"):
    return RelationExample(f"x{i}", tuple(tokens), s[0], s[1], o[0], o[1], rel, st, ot, source)


@pytest.fixture(scope="module")
def tok(tiny_encoder_dir):
    return load_tokenizer(tiny_encoder_dir)


# ------------------------------------------------------------------------------------ windowing

@pytest.mark.parametrize("n,keep,budget", [
    (10, [(2, 3), (5, 6)], 20),            # fits: everything
    (100, [(40, 42), (50, 53)], 20),       # one window around both
    (100, [(0, 2), (95, 100)], 20),        # far apart: two windows
    (300, [(250, 260), (3, 5)], 16),       # object before subject, far apart
    (100, [(10, 60), (70, 72)], 20),       # a long entity
])
def test_window_ranges_keep_both_starts_within_budget(n, keep, budget):
    ranges = window_ranges(n, keep, budget)
    kept = [p for s, e in ranges for p in range(s, e)]
    assert len(kept) == min(n, budget) or len(kept) <= budget
    assert len(kept) <= budget and kept == sorted(set(kept))
    for s, _ in keep:
        assert s in kept
    assert all(0 <= s < e <= n for s, e in ranges)


def test_window_centres_close_entities():
    assert window_ranges(100, [(40, 42), (50, 52)], 20) == [(36, 56)]


# ------------------------------------------------------------------------------------ TYP Marker

def test_marked_words_typed_and_untyped():
    e = ex(0, "Bill was born in Seattle .".split(), (0, 1), (4, 5), st="PERSON", ot="CITY")
    words, s, o = typ_marker.marked_words(e, use_types=True)
    assert words == ["@", "*", "person", "*", "Bill", "@", "was", "born", "in", "#", "^", "city", "^",
                     "Seattle", "#", "."]
    assert words[s[0]] == "@" and words[o[0]] == "#"
    words, s, o = typ_marker.marked_words(e, use_types=False)  # SemEval: type slot left out
    assert words == ["@", "Bill", "@", "was", "born", "in", "#", "Seattle", "#", "."]
    # object before subject
    e2 = ex(1, "Seattle is where Bill was born".split(), (3, 4), (0, 1))
    words, s, o = typ_marker.marked_words(e2, use_types=False)
    assert words[:3] == ["#", "Seattle", "#"] and words[s[0]:s[1]] == ["@", "Bill", "@"]


def test_typ_marker_windows_long_example_and_keeps_markers(tok):
    tokens = [f"word{i % 7}" for i in range(400)]
    tokens[10], tokens[390] = "apple", "river"
    long_ex = ex(0, tokens, (10, 11), (390, 391))
    short_ex = ex(1, "the apple fell into the river .".split(), (1, 2), (5, 6))
    items, n_windowed = typ_marker.encode([long_ex, short_ex], tok, relations=RELS, max_length=32, use_types=False)
    assert n_windowed == 1
    at, hash_ = tok.convert_tokens_to_ids("@"), tok.convert_tokens_to_ids("#")
    for it in items:
        assert len(it["input_ids"]) <= 32
        assert it["input_ids"][it["subj_pos"]] == at and it["input_ids"][it["obj_pos"]] == hash_
        assert it["label"] == 1
    assert tok.convert_tokens_to_ids("apple") in items[0]["input_ids"]
    assert tok.convert_tokens_to_ids("river") in items[0]["input_ids"]


# ------------------------------------------------------------------------------------ GenPT

def test_verbalize_semeval_tacred_and_no_relation():
    assert genpt.verbalize("Cause-Effect(e1,e2)") == "cause to effect"
    assert genpt.verbalize("Cause-Effect(e2,e1)") == "effect to cause"
    assert genpt.verbalize("Other") == genpt.verbalize("no_relation") == "no relation"
    assert genpt.verbalize("per:city_of_birth") == "person city of birth"
    assert genpt.verbalize("org:number_of_employees/members") == "organization number of employees members"


def test_label_table_pads_and_rejects_duplicates(tok):
    table = genpt.label_token_table(tok, RELS)
    assert len({len(r) for r in table}) == 1 and len({tuple(r) for r in table}) == len(RELS)
    assert tok.pad_token_id in table[0] or len(table[0]) == len(tok("no relation", add_special_tokens=False)["input_ids"])
    with pytest.raises(ConfigError, match="same label words"):
        genpt.label_token_table(tok, RELS, {"Other": "cause to effect"})


def test_genpt_template_masks_and_targets(tok):
    table = genpt.label_token_table(tok, RELS)
    e = ex(0, "the apple fell into the river .".split(), (1, 2), (5, 6), rel="Cause-Effect(e2,e1)")
    unseen = ex(1, "the apple fell into the river .".split(), (1, 2), (5, 6), rel="Never-Seen(e1,e2)")
    items, n_windowed = genpt.encode([e, unseen], tok, relations=RELS, max_length=64, use_types=False,
                                     label_table=table)
    it = items[0]
    assert n_windowed == 0
    assert all(it["input_ids"][p] == tok.mask_token_id for p in it["mask_pos"])
    assert it["target_ids"] == table[2] and it["label"] == 2
    text = tok.decode(it["input_ids"])
    assert "apple [MASK]" in text and "[MASK] river" in text
    assert items[1]["label"] == -1 and items[1]["target_ids"] == [-100] * len(table[0])


def test_genpt_loss_equals_minus_gold_score_per_slot(tiny_encoder_dir, tok):
    spec = FinetuneSpec("genpt", RELS, "Other", 64, False)
    model = spec.build_model(tiny_encoder_dir, tok).eval()
    exs = [ex(i, "the apple fell into the river .".split(), (1, 2), (5, 6), rel=RELS[i % 3]) for i in range(3)]
    items, _ = spec.encode(exs, tok)
    batch = spec.collate(items, tok.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    n_slots = batch["target_ids"].shape[1]
    gold_scores = out["scores"][torch.arange(3), batch["labels"]]
    assert torch.allclose(out["loss"], -gold_scores.mean() / n_slots, atol=1e-5)


# ------------------------------------------------------------------------------------ training set / metrics

def test_select_training_set_caps_synthetic_deterministically():
    golden = [ex(i, "a b c d".split(), (0, 1), (2, 3), rel=RELS[i % 3]) for i in range(6)]
    synth = [ex(100 + i, "a b c d".split(), (0, 1), (2, 3), rel=RELS[i % 3], source="synthetic:x") for i in range(30)]
    synth.append(ex(999, "a b c d".split(), (0, 1), (2, 3), rel="Unknown(e1,e2)", source="synthetic:x"))
    train, counts = select_training_set(golden, synth, RELS, per_relation=2, seed=1)
    assert len(train) == 6 + 6 and counts["synthetic_used"] == 6
    assert counts["synthetic_unknown_relation_skipped"] == {"Unknown(e1,e2)": 1}
    again, _ = select_training_set(golden, list(reversed(synth)), RELS, per_relation=2, seed=1)
    assert [e.id for e in train] == [e.id for e in again]  # order of the input does not matter
    other_seed, _ = select_training_set(golden, synth, RELS, per_relation=2, seed=2)
    assert [e.id for e in other_seed] != [e.id for e in train]
    assert len(select_training_set(golden, synth, RELS, per_relation=0, seed=1)[0]) == 6
    assert len(select_training_set(golden, synth, RELS, per_relation=None, seed=1)[0]) == 36
    with pytest.raises(DataError, match="relation"):
        select_training_set(golden + [synth[-1]], None, RELS, None, 1)


def test_unseen_test_relation_counted_wrong_and_reported():
    spec = FinetuneSpec("typ_marker", RELS, "Other", 64, False)
    test = [ex(0, "a b c".split(), (0, 1), (2, 3), rel="Cause-Effect(e1,e2)"),
            ex(1, "a b c".split(), (0, 1), (2, 3), rel="Brand-New(e1,e2)")]
    m = score_predictions(test, ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)"], spec, split="test", n_windowed=0)
    assert m["counts"]["test_unseen_relation_examples"] == 1
    assert m["counts"]["test_unseen_relations"] == {"Brand-New(e1,e2)": 1}
    assert m["test_micro_recall"] == 0.5 and m["test_micro_precision"] == 0.5 and m["f1_scale"] == "fraction"
    assert m["metric_excluded_label"] == "Other"
    # a label set without a no-relation class: nothing left out, and the metrics say so
    m = score_predictions(test, ["Cause-Effect(e1,e2)", "Other"], FinetuneSpec("typ_marker", RELS, None, 64, False),
                          split="test", n_windowed=0)
    assert m["metric_excluded_label"] is None and m["test_micro_precision"] == 0.5


def test_constant_baselines_other_scores_zero():
    test = [ex(i, "a b c".split(), (0, 1), (2, 3), rel=r)
            for i, r in enumerate(["Other"] * 5 + ["Cause-Effect(e1,e2)"] * 3 + ["Cause-Effect(e2,e1)"] * 2)]
    b = constant_baselines(test, "Other")
    assert b["majority_class"] == {"relation": "Other", "micro_f1": 0.0}
    p, r = 3 / 10, 3 / 5
    assert b["most_frequent_non_no_relation"]["relation"] == "Cause-Effect(e1,e2)"
    assert b["most_frequent_non_no_relation"]["micro_f1"] == pytest.approx(2 * p * r / (p + r))


# ------------------------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("backbone", ["typ_marker", "genpt"])
def test_checkpoint_roundtrip_and_label_set_mismatch(backbone, tiny_encoder_dir, tok, tmp_path):
    spec = FinetuneSpec(backbone, RELS, "Other", 64, False)
    model = spec.build_model(tiny_encoder_dir, tok).eval()
    spec.save(model, str(tmp_path), tok)
    loaded, tok2, spec2 = load_checkpoint(str(tmp_path), relations=list(reversed(RELS)))  # same set
    exs = [ex(i, "the apple fell into the river .".split(), (1, 2), (5, 6), rel=RELS[i % 3]) for i in range(5)]
    assert spec2 == spec
    assert predict(model, tok, spec, exs) == predict(loaded, tok2, spec2, exs)
    with pytest.raises(ConfigError, match="different label set.*Component-Whole"):
        load_checkpoint(str(tmp_path), relations=RELS[:2] + ["Component-Whole(e1,e2)"])
    with pytest.raises(ConfigError, match="not a tkre fine-tuned checkpoint"):
        load_checkpoint(tiny_encoder_dir)

"""Synthetic-set controls (scdg.source: oracle, shuffled, golden_repeat): what each holds, how each is
keyed (the method's SCDG keys unchanged; a shuffled or repeated set built on the very samples TKRE
generates), and the pipeline storing each in SCDG's place."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from tkre.config import ExperimentConfig
from tkre.data import from_arrow
from tkre.data.records import RelationExample
from tkre.generate.controls import golden_repeat, oracle_samples, shuffled_labels
from tkre.pipeline import stage_keys

sys.path.insert(0, str(Path(__file__).parent))
from sweep_helpers import golden_only_base, write_mini_dataset  # noqa: E402
from tiny_models import make_tiny_llama  # noqa: E402


def _ex(i, rel, source="golden"):
    return RelationExample(id=f"e{i}", tokens=("a", "b", f"w{i}", "c"), subj_start=0, subj_end=1, obj_start=3,
                           obj_end=4, relation=rel, source=source)


POOL = [_ex(i, rel) for i, rel in enumerate(["A"] * 10 + ["B"] * 10 + ["C"] * 2)]


def test_oracle_draws_real_examples_outside_the_split_by_seed():
    split_ids = {"e0", "e1", "e10"}
    drawn, short = oracle_samples(POOL, split_ids, ["A", "B", "C"], 3, seed=1)
    assert Counter(ex.relation for ex in drawn) == {"A": 3, "B": 3, "C": 2} and short == {"C": 2}
    assert not {ex.id.removeprefix("oracle-") for ex in drawn} & split_ids
    assert all(ex.source == "synthetic:oracle" for ex in drawn)
    assert oracle_samples(POOL, split_ids, ["A", "B", "C"], 3, seed=1)[0] == drawn  # the seed fixes the draw
    assert {ex.id for ex in oracle_samples(POOL, split_ids, ["A", "B"], 3, seed=2)[0]} != \
        {ex.id for ex in drawn if ex.relation != "C"}


def test_shuffled_permutes_labels_and_golden_repeat_matches_counts():
    generated = [_ex(100 + i, rel, "synthetic:hf:x") for i, rel in enumerate("AAAABBBBCC")]
    shuffled = shuffled_labels(generated, seed=1)
    assert [ex.tokens for ex in shuffled] == [ex.tokens for ex in generated]  # the same text
    assert Counter(ex.relation for ex in shuffled) == Counter(ex.relation for ex in generated)
    assert [ex.relation for ex in shuffled] != [ex.relation for ex in generated]
    assert shuffled[0].source == "synthetic:shuffled:hf:x"
    golden = [_ex(i, rel) for i, rel in enumerate("AABC")]
    repeated = golden_repeat(golden, generated)
    assert Counter(ex.relation for ex in repeated) == {"A": 4, "B": 4, "C": 2}
    assert len({ex.id for ex in repeated}) == len(repeated)
    assert {ex.tokens for ex in repeated if ex.relation == "A"} == {golden[0].tokens, golden[1].tokens}


def test_keys_llm_unchanged_controls_on_their_own_inputs():
    tkre = ExperimentConfig()
    keys = {s: stage_keys(tkre.model_copy(update={"scdg": tkre.scdg.model_copy(update={"source": s})}), "h")
            for s in ("llm", "oracle", "shuffled", "golden_repeat")}
    assert keys["llm"] == stage_keys(ExperimentConfig(), "h") and "generated" not in keys["llm"]
    # shuffled and golden_repeat are built on the generated set TKRE's own trial stores
    assert keys["shuffled"]["generated"] == keys["golden_repeat"]["generated"] == keys["llm"]["scdg"]
    assert len({k["scdg"] for k in keys.values()}) == 4 and len({k["finetune"] for k in keys.values()}) == 4
    assert "generated" not in keys["oracle"]
    # the oracle set does not depend on the generator's settings
    hotter = ExperimentConfig.model_validate({"scdg": {"source": "oracle"}, "edkg": {"generator": {
        "sampling": {"temperature": 0.9}}}})
    assert stage_keys(hotter, "h")["scdg"] == keys["oracle"]["scdg"]
    assert stage_keys(hotter, "other data")["scdg"] != keys["oracle"]["scdg"]


def test_pipeline_stores_each_control_in_scdgs_place(tmp_path, ray_local, semeval, tiny_encoder_dir, monkeypatch):
    """Generation-only runs (no fine-tuning): the oracle set holds N real examples per relation from outside
    the split; shuffled and golden_repeat are built on the one generated set and keep its per-relation
    counts. The generator is stood in for by one that writes known samples (a tiny random LLM keeps none)."""
    import tkre.generate
    from tkre.generate import read_synthetic
    from tkre.generate.outputs import write_synthetic
    from tkre.pipeline import run_experiment

    calls = []

    def fake_generate(golden, type_pairs, cfg, out, *, relations):
        calls.append(out)
        samples = [_ex(100 + i, ex.relation, "synthetic:hf:fake") for i, ex in enumerate(golden[:5])]
        write_synthetic(samples, [], Path(out))
        return {"generator": "hf:fake", "counts": {"kept": len(samples)}}

    monkeypatch.setattr(tkre.generate, "generate_synthetic", fake_generate)
    base = golden_only_base(write_mini_dataset(semeval, tmp_path / "data"), tiny_encoder_dir, tmp_path / "store")
    base["stages"] = {"edkg": False, "scdg": True, "pretrain_stage1": False, "pretrain_stage2": False,
                      "finetune": False}
    base["scdg"] = {"samples_per_relation": 2}
    store = tmp_path / "store" / "artifacts" / "scdg"
    rows = {}
    for source in ("oracle", "llm", "shuffled", "golden_repeat"):
        cfg = ExperimentConfig.model_validate({**base, "scdg": {**base["scdg"], "source": source}})
        rows[source] = run_experiment(cfg, variant=source)
    assert len(calls) == 1  # one generation, reused by shuffled and golden_repeat
    oracle = rows["oracle"]
    assert oracle.synthetic_source == "oracle" and oracle.scdg_generator == "oracle" and oracle.scdg == {}
    drawn = read_synthetic(store / oracle.artifact["scdg"])
    assert set(Counter(ex.relation for ex in drawn).values()) == {2}
    assert oracle.synthetic_kept == len(drawn) == 2 * oracle.relations
    split_file = tmp_path / "store" / "artifacts" / "split" / oracle.artifact["split"] / "train.parquet"
    split_ids = {ex.id for ex in from_arrow(pq.read_table(split_file))}
    assert not {ex.id.removeprefix("oracle-") for ex in drawn} & split_ids
    generated = read_synthetic(store / rows["llm"].artifact["scdg"])
    per_rel = Counter(ex.relation for ex in generated)
    assert rows["llm"].synthetic_source == "llm" and len(generated) == 5
    for source in ("shuffled", "golden_repeat"):
        row = rows[source]
        assert row.synthetic_source == source and row.scdg_generator == f"{source}(hf:fake)"
        made = read_synthetic(store / row.artifact["scdg"])
        assert Counter(ex.relation for ex in made) == per_rel and row.synthetic_kept == 5
        manifest = json.loads((store / row.artifact["scdg"] / "manifest.json").read_text())
        assert manifest["inputs"]["generated"] == rows["llm"].artifact["scdg"]
    assert len({row.artifact["scdg"] for row in rows.values()}) == 4

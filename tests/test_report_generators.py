"""The generator comparison (tkre/report/generators.py) from hand-made results rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tkre.report.generators import acceptance_table, generator_report, reasons_table, role_table


def _scdg(gen, asked, parsed, kept, tin, tout, secs, cost, reasons, per_rel, overlap=0.5, d2=0.8, fresh=None):
    return {"scdg.generator": gen, "scdg.prompts": 4, "scdg.asked": asked, "scdg.samples": parsed + 2,
            "scdg.parsed": parsed, "scdg.valid": kept, "scdg.kept": kept, "scdg.input_tokens": tin,
            "scdg.output_tokens": tout, "scdg.fresh_output_tokens": tout if fresh is None else fresh,
            "scdg.generation_seconds": secs, "scdg.seconds": secs + 1, "scdg.cost_usd": cost,
            "scdg.distinct_2": d2, "scdg.golden_overlap_mean": overlap, "scdg.reasons_json": json.dumps(reasons),
            "scdg.acceptance_json": json.dumps(per_rel)}


def _edkg(gen, n, tin, tout, secs, cost, words):
    return {"edkg.generator": gen, "edkg.prompts": n, "edkg.explanations": n, "edkg.input_tokens": tin,
            "edkg.output_tokens": tout, "edkg.fresh_output_tokens": tout, "edkg.generation_seconds": secs,
            "edkg.seconds": secs, "edkg.cost_usd": cost, "edkg.explanation_words_mean": words, "edkg.distinct_2": 0.9}


def _rows(with_f1: bool = False):
    a_rel = {"R1": {"asked": 2, "kept": 1}, "R2": {"asked": 2, "kept": 0}}
    b_rel = {"R1": {"asked": 2, "kept": 2}, "R2": {"asked": 2, "kept": 2}}
    rows = [
        {"variant": "free", "status": "ok", "artifact.scdg": "s1", "artifact.edkg": "e1",
         **_scdg("hf:m", 4, 2, 1, 1000, 200, 10.0, 0.0, {"unparseable": 2, "duplicate_golden": 1},
                 a_rel), **_edkg("hf:m", 4, 400, 100, 5.0, 0.0, 20.0)},
        {"variant": "paid", "status": "ok", "artifact.scdg": "s2", "artifact.edkg": "e2",
         **_scdg("openai:gpt", 4, 4, 4, 2_000_000, 300_000, 20.0, 1.45, {"surplus": 1}, b_rel),
         **_edkg("openai:gpt", 4, 400, 100, 5.0, None, 40.0)},
    ]
    if with_f1:  # a second seed of "free" fine-tuned on the SAME generation artifact: counted once
        rows[0].update(dev_micro_f1=0.5, test_micro_f1=0.6)
        rows.append({**rows[0], "dev_micro_f1": 0.7, "test_micro_f1": 0.8})
        rows[1].update(dev_micro_f1=0.4, test_micro_f1=0.45)
    return pd.DataFrame(rows)


def test_scdg_table_by_hand():
    t = role_table(_rows(), "scdg").set_index("setting")
    free, paid = t.loc["free"], t.loc["paid"]
    assert (free["asked"], free["parsed"], free["kept"], free["acceptance"]) == (4, 2, 1, 0.25)
    assert (paid["kept"], paid["acceptance"]) == (4, 1.0)
    assert free["tokens/s"] == pytest.approx(20.0) and paid["tokens/s"] == pytest.approx(15000.0)
    assert free["cost USD"] == 0.0 and paid["cost USD"] == pytest.approx(1.45)
    assert free["input tokens"] == 1000 and paid["output tokens"] == 300_000
    assert free["golden overlap"] == 0.5 and free["wall s"] == 11.0
    assert "test micro-F1 %" not in t  # generation-only: no F1 columns


def test_edkg_table_unknown_cost_stays_unknown():
    t = role_table(_rows(), "edkg").set_index("setting")
    assert t.loc["free", "words / explanation"] == 20.0 and t.loc["paid", "words / explanation"] == 40.0
    assert t.loc["free", "cost USD"] == 0.0 and pd.isna(t.loc["paid", "cost USD"])


def test_shared_artifact_counted_once_and_f1_mean_std():
    t = role_table(_rows(with_f1=True), "scdg").set_index("setting")
    assert t.loc["free", "runs"] == 1 and t.loc["free", "asked"] == 4  # not 8: same artifact s1 twice
    assert t.loc["free", "test micro-F1 %"] == "70.0 ± 14.1"  # 60 and 80
    assert t.loc["paid", "test micro-F1 %"] == "45.0"


def test_per_relation_and_reasons_tables():
    acc = acceptance_table(_rows()).set_index("relation")
    assert acc.loc["R1", "free"] == "1/2" and acc.loc["R2", "free"] == "0/2" and acc.loc["R2", "paid"] == "2/2"
    rea = reasons_table(_rows()).set_index("reason")
    assert list(rea.index) == ["unparseable", "duplicate_golden", "surplus"]  # most frequent first
    assert rea.loc["unparseable", "free"] == 2 and rea.loc["unparseable", "paid"] == 0


def test_generator_report_writes_markdown_and_plots(tmp_path):
    rep = generator_report(_rows(with_f1=True), tmp_path)
    assert "### SCDG (synthetic samples)" in rep.markdown and "### EDKG (explanations)" in rep.markdown
    assert "| free " in rep.markdown and "unparseable" in rep.markdown
    names = {p.name for p in rep.plots}
    assert names == {"scdg_outcomes.png", "acceptance_vs_cost.png", "f1_vs_tokens.png"}
    for p in rep.plots:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 1000
    gen_only = generator_report(_rows(), tmp_path / "g")
    assert "f1_vs_tokens.png" not in {p.name for p in gen_only.plots}


def test_no_generation_statistics_no_section(tmp_path):
    assert generator_report(pd.DataFrame([{"variant": "golden_only", "status": "ok", "test_micro_f1": 0.5}]),
                            tmp_path) is None

"""The report's paired comparison with golden-only (issue 16 item 4), on hand-made results tables whose
differences, means, standard deviations and p-values are computed here by hand, not by scipy."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from tkre.report.paired import comparisons_table, mean_ci95, paired_comparisons, paired_section, sample_std, table3


def _rows(variant, f1_by_seed, dataset="semeval", k=8, backbone="typ_marker"):
    return [{"dataset": dataset, "k": k, "backbone": backbone, "variant": variant, "seed": s,
             "test_micro_f1": f1} for s, f1 in f1_by_seed.items()]


GOLDEN = {1: 0.300, 2: 0.310, 3: 0.250, 4: 0.280, 5: 0.330}
# TKRE - golden-only per seed: +0.5, +1.5, +2.5, +3.5, -1.0 percentage points (distinct magnitudes: no ties)
TKRE = {1: 0.305, 2: 0.325, 3: 0.275, 4: 0.315, 5: 0.320}


def _t4_cdf(t: float) -> float:
    """Student's t CDF with 4 degrees of freedom, closed form."""
    x = t / math.sqrt(4 + t * t)
    return 0.5 + 0.75 * x - 0.25 * x ** 3


def test_differences_mean_std_and_both_p_values_by_hand():
    df = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", TKRE))
    (c,) = paired_comparisons(df)
    assert (c.dataset, c.k, c.backbone, c.variant, c.seeds) == ("semeval", 8, "typ_marker", "tkre", [1, 2, 3, 4, 5])
    assert c.differences == pytest.approx([0.5, 1.5, 2.5, 3.5, -1.0])
    assert c.mean == pytest.approx(1.4)
    # squared deviations from 1.4: 0.81 + 0.01 + 1.21 + 4.41 + 5.76 = 12.2, over n - 1 = 4
    assert c.std == pytest.approx(math.sqrt(12.2 / 4))
    # Wilcoxon, exact: ranks of |d| are 1 (0.5), 3 (1.5), 4 (2.5), 5 (3.5), 2 (1.0, negative), so W- = 2.
    # Of the 2^5 = 32 sign patterns, rank sums <= 2 come from {}, {1}, {2}: two-sided p = 2 * 3 / 32.
    assert c.wilcoxon_p() == pytest.approx(6 / 32)
    t = 1.4 / (math.sqrt(12.2 / 4) / math.sqrt(5))
    assert c.ttest_p() == pytest.approx(2 * (1 - _t4_cdf(t)), rel=1e-9)
    row = comparisons_table([c]).iloc[0]
    assert row["mean Δ"] == "+1.40" and row["std Δ"] == "1.75" and row["mean > 2 std"] == "no"
    assert row["Wilcoxon p"] == "0.188" and row["unpaired seeds"] == "none"
    assert row["per-seed Δ (pp)"] == "s1: +0.5, s2: +1.5, s3: +2.5, s4: +3.5, s5: -1.0"


def test_pairs_by_dataset_k_backbone_seed_and_reports_unpaired_seeds():
    golden = dict(GOLDEN)
    tkre = {s: v for s, v in TKRE.items() if s != 5} | {6: 0.9}  # seed 5 missing, seed 6 has no golden-only
    df = pd.DataFrame(_rows("golden_only", golden) + _rows("tkre", tkre)
                      + _rows("golden_only", {1: 0.9, 2: 0.9}, k=16)       # another cell: no TKRE there
                      + _rows("tkre", {1: 0.1, 2: 0.1}, backbone="genpt"))  # another backbone: no golden-only
    (c,) = paired_comparisons(df)
    assert (c.k, c.backbone, c.seeds, c.baseline_only, c.variant_only) == (8, "typ_marker", [1, 2, 3, 4], [5], [6])
    assert c.differences == pytest.approx([0.5, 1.5, 2.5, 3.5])
    row = comparisons_table([c]).iloc[0]
    assert row["pairs"] == 4 and row["unpaired seeds"] == "golden_only only: 5; tkre only: 6"
    # all four differences positive, distinct: exact two-sided p = 2 / 2^4; mean 2.0 < 2 x std 1.29
    assert c.wilcoxon_p() == pytest.approx(2 / 16)
    assert row["mean > 2 std"] == "no"
    md = "\n".join(paired_section(df))
    assert "golden_only only: 5; tkre only: 6" in md


def test_each_ablation_against_golden_only_and_table3_with_the_papers_numbers_labelled():
    ablation = {s: v + 0.01 + (0.001 if s == 2 else -0.001 if s == 4 else 0) for s, v in GOLDEN.items()}
    df = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", TKRE) + _rows("no_scl", ablation)
                      + _rows("golden_only", {3: 0.2}) + _rows("golden_only", {3: 0.4}))  # seed 3 thrice: averaged, said
    paper = {"tkre": 77.6, "no_scl": 76.2, "golden_only": 70.9}
    lookup = lambda dataset, k, backbone, variant: paper.get(variant) if (dataset, k) == ("semeval", 8) else None
    comps = paired_comparisons(df)
    assert [c.variant for c in comps] == ["tkre", "no_scl"]
    golden3 = (0.25 + 0.2 + 0.4) / 3 * 100
    assert comps[1].differences[2] == pytest.approx(26.0 - golden3)
    # seeds 1, 2, 4, 5: +1.0, +1.1, +0.9, +1.0 pp (seed 3 is against the averaged golden-only row)
    assert [comps[1].differences[i] for i in (0, 1, 3, 4)] == pytest.approx([1.0, 1.1, 0.9, 1.0])
    assert any("golden_only seed 3 (3 rows)" in a for a in comps[0].averaged)
    table = comparisons_table(comps, lookup)
    assert list(table["paper Δ (paper's numbers)"]) == ["+6.7", "+5.3"]
    (t3,) = table3(df, lookup).values()
    assert list(t3["variant"]) == ["TKRE", "w/o SCL", "w/o ALL (golden data only)"]
    tkre = t3.iloc[0]
    assert tkre["SemEval K=8"].startswith("30.8 ± ") and tkre["SemEval K=8"].endswith("(5)")
    assert tkre["SemEval K=8 paper"] == "77.6" and tkre["avg paper"] == "77.6" and tkre["avg"] == "30.8"
    md = "\n".join(paired_section(df, lookup))
    assert "Table 3" in md and "the paper's numbers" in md and "w/o SCL - golden-only" in md


def test_constant_difference_has_no_t_test_and_equal_scores_no_wilcoxon():
    same = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", GOLDEN))
    (c,) = paired_comparisons(same)
    assert c.differences == [0.0] * 5 and c.wilcoxon_p() is None and c.ttest_p() is None
    shifted = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", {s: v + 0.02 for s, v in GOLDEN.items()}))
    (c,) = paired_comparisons(shifted)
    assert c.std == pytest.approx(0.0, abs=1e-9) and c.ttest_p() is None
    assert comparisons_table([c]).iloc[0]["mean > 2 std"] == ""


def test_no_section_without_a_golden_only_pair():
    assert paired_section(pd.DataFrame(_rows("tkre", TKRE))) == []
    assert paired_section(pd.DataFrame(_rows("golden_only", GOLDEN))) == []


def test_several_settings_of_a_variant_are_each_paired_with_golden_only():
    """TKRE run with two generators in one cell: two comparisons against the same golden-only seeds,
    not one that averages the generators."""
    rows = _rows("golden_only", GOLDEN)
    for gen, shift in (("hf:a", 0.01), ("openai:b", 0.03)):
        rows += [{**r, "generator": gen} for r in _rows("tkre", {s: v + shift for s, v in GOLDEN.items()})]
    comps = paired_comparisons(pd.DataFrame(rows))
    assert [(c.setting, c.mean) for c in comps] == [("generator=hf:a", pytest.approx(1.0)),
                                                    ("generator=openai:b", pytest.approx(3.0))]
    assert comparisons_table(comps).iloc[1]["variant - golden_only"] == "TKRE [generator=openai:b] - golden-only"


def test_tkre_report_writes_the_paired_section(tmp_path):
    from tkre.report.tables import write_report

    from tkre.results import RESULTS_SCHEMA_VERSION

    rows = [{**r, "phase": "grid", "trial_id": f"{r['variant']}{r['seed']}", "status": "ok", "error": None,
             "schema_version": RESULTS_SCHEMA_VERSION, "relations": 18, "synthetic_kept": 0,
             "dev_micro_f1": r["test_micro_f1"], "synthetic_asked": 0 if r["variant"] == "golden_only" else 8,
             "generator": "none" if r["variant"] == "golden_only" else "hf:embedded:smollm2"}
            for r in _rows("golden_only", GOLDEN) + _rows("tkre", TKRE) + _rows("no_edkg", GOLDEN)]
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet", index=False)
    md = re.sub(r" +", " ", write_report(tmp_path).markdown_path.read_text())  # tabulate pads cells
    assert "## Paired comparison with golden-only" in md
    assert "| TKRE - golden-only | 5 | s1: +0.5, s2: +1.5, s3: +2.5, s4: +3.5, s5: -1.0 | +1.40 |" in md
    assert "Table 3" in md and "| w/o EDKG |" in md
    # the per-seed differences plotted (one panel: one cell), referenced from the report
    from PIL import Image

    png = tmp_path / "report" / "paired_differences.png"
    assert "![paired_differences](paired_differences.png)" in md
    with Image.open(png) as im:
        assert im.size == (780, 456)  # 6.5 x 3.8 in at 120 dpi: one panel


def test_paired_plot_has_a_panel_per_cell(tmp_path):
    from tkre.report.paired import plot_paired_differences

    df = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", TKRE)
                      + _rows("golden_only", GOLDEN, k=16) + _rows("tkre", TKRE, k=16))
    from PIL import Image

    with Image.open(plot_paired_differences(paired_comparisons(df), tmp_path / "p.png")) as im:
        assert im.size == (1560, 456)


def test_mean_ci95_and_sample_std_are_the_textbook_formulas():
    assert sample_std([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof), from tables
    assert mean_ci95([1.0, 2.0, 3.0]) == pytest.approx((2.0 - half, 2.0 + half))
    assert mean_ci95([5.0]) is None and math.isnan(sample_std([5.0]))


def test_confidence_interval_is_students_t_over_the_seeds():
    df = pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", TKRE))
    (c,) = paired_comparisons(df)
    half = 2.7764451051977987 * math.sqrt(12.2 / 4) / math.sqrt(5)  # t(0.975, 4 dof), from tables
    assert c.ci95() == pytest.approx((1.4 - half, 1.4 + half))
    assert comparisons_table([c]).iloc[0]["95 % CI"] == f"[{1.4 - half:+.2f}, {1.4 + half:+.2f}]"
    assert "95 % CI" in "\n".join(paired_section(df))


def _with_budget(rows, steps, converged=None):
    return [{**r, "finetune_steps": steps[r["seed"]] if isinstance(steps, dict) else steps,
             "stopped_on_patience": converged} for r in rows]


def test_budget_check_flags_unequal_steps_unless_both_converged():
    golden = _with_budget(_rows("golden_only", GOLDEN), 90)
    unequal = pd.DataFrame(golden + _with_budget(_rows("tkre", TKRE), {1: 130, 2: 94, 3: 90, 4: 90, 5: 90}))
    (c,) = paired_comparisons(unequal)
    assert c.unequal_steps() == [1]  # 94 vs 90 is within 5 %; 130 vs 90 is not
    assert c.budget_check() == "UNEQUAL STEPS (> 5%, not both converged): s1: 130 vs 90"
    text = "\n".join(paired_section(unequal))
    assert "**Unequal fine-tuning budgets**" in text and "TKRE (seeds 1)" in text
    equal = pd.DataFrame(golden + _with_budget(_rows("tkre", TKRE), 92))
    (c,) = paired_comparisons(equal)
    assert c.budget_check() == "equal steps" and "Unequal fine-tuning budgets" not in "\n".join(paired_section(equal))
    converged = pd.DataFrame(_with_budget(_rows("golden_only", GOLDEN), 60, True)
                             + _with_budget(_rows("tkre", TKRE), 200, True))
    assert paired_comparisons(converged)[0].budget_check() == "both converged"
    one_converged = pd.DataFrame(_with_budget(_rows("golden_only", GOLDEN), 60, True)
                                 + _with_budget(_rows("tkre", TKRE), 200, False))
    assert paired_comparisons(one_converged)[0].unequal_steps() == [1, 2, 3, 4, 5]
    # rows from before steps were recorded (the committed CPU study's)
    assert paired_comparisons(pd.DataFrame(_rows("golden_only", GOLDEN) + _rows("tkre", TKRE)))[0].budget_check() \
        == "steps unknown"

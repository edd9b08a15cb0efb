"""results/cpu_semeval/README.md states its numbers as the rows give them: epochs counted from 1 (the rows'
`best_epoch` is 0-based), and each headline's 95 % confidence interval (Student's t over the seeds, as
`tkre report` computes it) beside a "no detectable difference" where the interval holds 0."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tkre.report.paired import paired_comparisons

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cpu_semeval"
FILES = {"results.parquet": 10, "steps_results.csv": 15, "epochs15_results.csv": 15, "steps15_results.csv": 22}


def _rows(name: str) -> pd.DataFrame:
    return pd.read_parquet(RESULTS / name) if name.endswith(".parquet") else pd.read_csv(RESULTS / name)


def _minus(text: str) -> str:
    return text.replace("-", "−")


def test_page_quotes_each_headlines_confidence_interval():
    page = (RESULTS / "README.md").read_text()
    for name in FILES:
        (tkre,) = [c for c in paired_comparisons(_rows(name)) if c.variant == "tkre"]
        low, high = tkre.ci95()
        assert _minus(f"{low:+.2f} to {high:+.2f}") in page, (name, low, high)
        if low < 0 < high:  # no detectable difference: the page must not claim more
            assert _minus(f"{tkre.mean:+.2f} ± {tkre.std:.2f}") in page
    assert "does as well" not in page and "no detectable difference" in page
    assert "carry the method" not in page


def test_page_counts_best_epochs_from_one():
    page = (RESULTS / "README.md").read_text()
    for name, epochs in FILES.items():
        df = _rows(name)
        golden = df[df["variant"] == "golden_only"]["best_epoch"].astype(int) + 1
        span = f"{golden.min()}–{golden.max()}" if golden.min() != golden.max() else f"{golden.min()}"
        assert f"{span} of {epochs}" in page, (name, span, epochs)

"""Real embedded SmolLM2 on the quickstart workload (SemEval K=8): EDKG for every golden example and
SCDG for every relation, timed; the quickstart budget allows ~4-5 minutes for both on 2 CPU cores.

    python -m pytest tests/test_generate_slow.py --run-slow -s
"""

from __future__ import annotations

import json
import time

import pytest

from pathlib import Path

from tkre.config import ExperimentConfig, read_yaml
from tkre.data import relation_type_schema, sample_kshot
from tkre.generate import generate_explanations, generate_synthetic, read_explanations, read_synthetic


@pytest.mark.slow
def test_quickstart_generation_with_smollm2(ray_local, semeval, tmp_path):
    golden = sample_kshot(semeval, 8, 1).train
    base, _ = read_yaml(Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml")
    exp = ExperimentConfig.model_validate(base["base"])  # the settings the quickstart states
    for gen in (exp.edkg.generator, exp.scdg.generator):  # SCDG's: a copy of EDKG's unless the file sets one
        gen.cache_dir = str(tmp_path / "cache")
    edkg, scdg = exp.edkg, exp.scdg
    t0 = time.perf_counter()
    me = generate_explanations(golden, edkg, tmp_path / "edkg")
    t1 = time.perf_counter()
    ms = generate_synthetic(golden, relation_type_schema(golden), scdg, tmp_path / "scdg")
    t2 = time.perf_counter()
    report = {"edkg_s": round(t1 - t0, 1), "scdg_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
              "explanations": me["counts"]["written"], "edkg_tokens_per_s": me["tokens_per_s"],
              "synthetic_kept": ms["counts"]["kept"], "acceptance_rate": ms["acceptance_rate"],
              "scdg_rounds": ms["rounds"], "reasons": ms["reasons"], "scdg_tokens_per_s": ms["tokens_per_s"]}
    print("QUICKSTART_GENERATION " + json.dumps(report))
    assert me["counts"]["written"] == len(golden) == 144
    assert len(read_explanations(tmp_path / "edkg")) == 144
    synthetic = read_synthetic(tmp_path / "scdg")
    assert len(synthetic) == ms["counts"]["kept"] and ms["counts"]["kept"] > 0
    assert all(ex.problems() == [] and ex.source.startswith("synthetic:hf:") for ex in synthetic)
    # a second run is served from the cache
    again = generate_synthetic(golden, relation_type_schema(golden), scdg, tmp_path / "scdg2")
    assert again["counts"]["generated"] == 0 and again["counts"]["kept"] == ms["counts"]["kept"]

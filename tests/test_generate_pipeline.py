"""The Ray Data generation pipeline with the hf backend on a tiny Llama: batching, per-row errors,
cache and resume (a real subprocess killed with SIGKILL), outputs, CLI, bad model paths.

Tiny random models test the plumbing only; quality numbers come from the real SmolLM2 (slow test)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tkre.config import DecodingConfig, EDKGConfig, GeneratorConfig, SamplingConfig, SCDGConfig
from tkre.data import ARROW_SCHEMA, relation_type_schema
from tkre.errors import ConfigError
from tkre.generate import generate_explanations, generate_synthetic, read_explanations, read_rejects, read_synthetic
from tkre.generate import parse
from tkre.generate.backends import backend_spec, create_backend
from tkre.generate.backends.base import Backend, RowResult
from tkre.generate.cache import GenerationCache, row_key

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def golden(semeval):
    from tkre.data import sample_kshot

    return sample_kshot(semeval, 8, 1).train


def _gen(model, cache, **kw) -> GeneratorConfig:
    sampling = kw.pop("sampling", {})
    return GeneratorConfig(model=model, cache_dir=str(cache), batch_size=kw.pop("batch_size", 4),
                           sampling=SamplingConfig(**{"temperature": 0.0, **sampling}), **kw)


def _edkg(model, cache, *, max_new_tokens=8, **kw) -> EDKGConfig:
    return EDKGConfig(generator=_gen(model, cache), max_new_tokens=max_new_tokens, **kw)


def _scdg(model, cache, *, max_new_tokens=8, **kw) -> SCDGConfig:
    return SCDGConfig(generator=_gen(model, cache), max_new_tokens=max_new_tokens, **kw)


# ------------------------------------------------------------------------------------------ cache

def test_row_key_changes_with_every_component():
    base = dict(backend="hf", model="m", revision="r", prompt="p", sampling={"temperature": 0.7}, sample_index=0)
    keys = {row_key(**base)}
    for field, value in [("backend", "openai"), ("model", "m2"), ("revision", "r2"), ("prompt", "p2"),
                         ("sampling", {"temperature": 0.8}), ("sample_index", 1)]:
        keys.add(row_key(**{**base, field: value}))
    assert len(keys) == 7 and row_key(**base) == row_key(**dict(base))


def test_cache_round_trip_and_no_partial_files(tmp_path):
    cache = GenerationCache(tmp_path)
    assert cache.get("ab" * 16) is None
    cache.put("ab" * 16, {"text": "hello", "tokens": 2})
    assert cache.get("ab" * 16)["text"] == "hello" and len(cache) == 1
    cache.path("cd" * 16).parent.mkdir(parents=True, exist_ok=True)
    cache.path("cd" * 16).write_text("{not json")  # a foreign broken file is a miss, not a crash
    assert cache.get("cd" * 16) is None
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------ backend

def test_hf_backend_left_padded_batch_matches_one_by_one(tiny_llama):
    backend = create_backend(GeneratorConfig(model=tiny_llama))
    s = DecodingConfig(temperature=0.0, max_new_tokens=6)
    prompts = ["Say hi.", "Explain why the sky is blue in a long and detailed way, please.", "ok"]
    batched = backend.generate(prompts, s)
    single = [backend.generate([p], s)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)
    rows = backend.generate_rows(prompts, s)
    assert all(0 < r.tokens <= 6 for r in rows)


class _Flaky(Backend):
    """Fails any batch containing 'BAD' (what a malformed prompt does to an engine batch)."""

    def _generate_batch(self, prompts, sampling, seeds, schemas):
        if any("BAD" in p for p in prompts):
            raise RuntimeError("malformed prompt")
        return [RowResult(p.upper(), 1) for p in prompts]


def test_one_bad_row_does_not_fail_its_batch():
    rows = _Flaky().generate_rows(["a", "BAD", "", "c"], DecodingConfig(max_new_tokens=4))
    assert [r.text for r in rows] == ["A", None, None, "C"]
    assert "malformed prompt" in rows[1].error and rows[2].error == "empty prompt"
    with pytest.raises(Exception, match="2 of 4 prompts failed"):
        _Flaky().generate(["a", "BAD", "", "c"], DecodingConfig(max_new_tokens=4))


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such model folder"):
        backend_spec(GeneratorConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE|cannot be loaded"):
        backend_spec(GeneratorConfig(model="no-such-org/no-such-model-xyz"))


# ------------------------------------------------------------------------------------------ pipeline

def test_explanations_end_to_end_then_served_from_cache(ray_local, tiny_llama, golden, tmp_path):
    cfg = _edkg(tiny_llama, tmp_path / "cache", max_new_tokens=6)
    examples = golden[:6]
    m1 = generate_explanations(examples, cfg, tmp_path / "a")
    assert m1["counts"]["generated"] == 6 and m1["counts"]["cache_hits"] == 0 and m1["counts"]["errors"] == 0
    assert 0 < m1["tokens"] <= 36 and m1["tokens_per_s"] > 0
    rows = read_explanations(tmp_path / "a")
    assert [r["source_id"] for r in rows] == [ex.id for ex in examples]
    assert rows[0]["subject"] == examples[0].subject and rows[0]["text"] == examples[0].text
    assert all(r["explanation"] for r in rows)
    assert {r["generator"] for r in rows} == {f"hf:{Path(tiny_llama).name}"}
    # input tokens = the chat-templated prompts' token counts; output tokens = the generated ones
    from transformers import AutoTokenizer

    from tkre.generate.prompts import as_chat_text, edkg_prompt

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    expected_in = sum(len(tok(as_chat_text(tok, edkg_prompt(ex, cfg.prompt), None), add_special_tokens=False)
                          ["input_ids"]) for ex in examples)
    assert m1["run"]["input_tokens"] == expected_in and m1["run"]["output_tokens"] == m1["tokens"]
    assert m1["quality"]["explanations"] == 6 and m1["quality"]["explanation_words_mean"] > 0
    m2 = generate_explanations(examples, cfg, tmp_path / "b")
    assert m2["counts"]["cache_hits"] == 6 and m2["counts"]["generated"] == 0 and m2["tokens"] == 0
    # the data set's tokens include cached rows: a run served from the cache reports what it cost
    assert (m2["run"]["input_tokens"], m2["run"]["output_tokens"]) == (expected_in, m1["tokens"])
    assert [r["explanation"] for r in read_explanations(tmp_path / "b")] == [r["explanation"] for r in rows]
    assert m2["counts"]["written"] == 6 and m2["generator"].startswith("hf:")
    assert not (tmp_path / "b" / "manifest.json").exists()  # the store (or the command) writes the one manifest


def test_synthetic_with_garbage_model_rejects_everything_with_reasons(ray_local, tiny_llama, golden, tmp_path):
    cfg = _scdg(tiny_llama, tmp_path / "cache", samples_per_prompt=2, prompt_examples=2, max_rounds=2,
                max_new_tokens=12, samples_per_relation=2)
    rels = sorted({ex.relation for ex in golden})[:2]
    m = generate_synthetic(golden, relation_type_schema(golden), cfg, tmp_path / "s", relations=rels)
    synthetic, rejects = read_synthetic(tmp_path / "s"), read_rejects(tmp_path / "s")
    known = {v for k, v in vars(parse).items() if k.isupper() and isinstance(v, str)}
    assert rejects and all(r["reason"] in known for r in rejects)
    assert m["rounds"] == 2 and m["counts"]["prompts"] == 4  # 2 relations x 1 prompt x 2 rounds
    assert m["counts"]["kept"] == len(synthetic) and m["counts"]["rejected"] == len(rejects)
    assert sum(m["reasons"].values()) == len(rejects)
    assert m["type_check"] is False  # SemEval: no types
    assert pq.read_table(tmp_path / "s" / "synthetic.parquet").schema.equals(ARROW_SCHEMA)
    # the row statistics the generator comparison reads (tkre/generate/stats.py)
    from tkre.generate.stats import role_stats

    st = role_stats("scdg", m, backend="hf", base_url=None, price_in=None, price_out=None)
    assert st["asked"] == 4 and st["kept"] == m["counts"]["kept"] and st["cost_usd"] == 0.0
    assert st["input_tokens"] > st["prompts"] * 20 and 0 < st["output_tokens"] <= 4 * 12
    assert st["parsed"] == m["counts"]["samples"] - sum(v for k, v in m["reasons"].items()
                                                        if k in ("empty_output", "unparseable", "truncated",
                                                                 "missing_field", "generation_error"))
    assert json.loads(st["reasons_json"]) == m["reasons"]
    assert json.loads(st["acceptance_json"]) == {r: {"asked": 2, "kept": m["acceptance"][r]["kept"]} for r in rels}
    assert m["quality"]["samples"] == len(synthetic)
    paid = role_stats("scdg", m, backend="openai", base_url="https://api.openai.com/v1", price_in=None, price_out=None)
    assert paid["cost_usd"] is None and paid["price_known"] is False


def test_synthetic_with_empty_prompt_rows_counts_errors(ray_local, tiny_llama, golden, tmp_path):
    """A template that renders to nothing makes every row fail alone: counted, no record, and a stage
    where every row failed is an error (issue 14 item 2) naming the first reason."""
    from tkre.errors import GenerationError

    cfg = _scdg(tiny_llama, tmp_path / "cache", max_rounds=1, prompt=" ", samples_per_relation=1)
    rel = golden[0].relation
    with pytest.raises(GenerationError, match="1/1 rows failed.*empty prompt") as failed:
        generate_synthetic(golden, {}, cfg, tmp_path / "s", relations=[rel])
    m = failed.value.summary  # the counts travel with the error (the manifest writer stores them)
    assert m["counts"]["errors"] == 1 and m["reasons"] == {parse.GENERATION_ERROR: 1}
    assert read_synthetic(tmp_path / "s") == []
    assert "empty prompt" in read_rejects(tmp_path / "s")[0]["detail"]


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    from tkre.config import EDKGConfig, GeneratorConfig, SamplingConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.generate import generate_explanations
    model, cache, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    golden = sample_kshot(load_dataset("semeval"), 8, 1).train[:n]
    gen = GeneratorConfig(model=model, cache_dir=cache, batch_size=1, threads_per_actor=1,
                          sampling=SamplingConfig(temperature=0.7))
    cfg = EDKGConfig(generator=gen, max_new_tokens=64)
    m = generate_explanations(golden, cfg, out)
    print("MANIFEST " + json.dumps(m["counts"]), flush=True)
""")


def test_killed_run_resumes_without_loss_or_duplicates(tiny_llama, tmp_path):
    n = 24
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    cache_dir, out = tmp_path / "cache", tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    args = [sys.executable, str(script), tiny_llama, str(cache_dir), str(out), str(n)]
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    cache = GenerationCache(cache_dir)
    deadline = time.time() + 240
    while len(cache) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    before = len(cache)
    assert 3 <= before < n, f"{before} rows cached before the kill"
    assert not (out / "explanations.parquet").exists()

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400, start_new_session=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("MANIFEST ")]
    assert done.returncode == 0 and line, done.stderr[-2000:]
    counts = json.loads(line[0].removeprefix("MANIFEST "))
    assert counts["cache_hits"] >= before and counts["cache_hits"] + counts["generated"] == n
    assert counts["written"] == n and counts["errors"] == 0
    rows = read_explanations(out)
    assert len(rows) == n and len({r["source_id"] for r in rows}) == n
    assert len(cache) == n  # nothing lost, nothing twice


def test_cli_generate_synthetic_prints_acceptance(ray_local, tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from tkre.cli import app

    out = tmp_path / "cli"
    args = ["generate", "synthetic", "--dataset", "semeval", "--k", "8", "--seed", "1", "--backend", "hf",
            "--model", tiny_llama, "--samples-per-relation", "1", "--max-new-tokens", "6", "--batch-size", "9",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    cfg_file = tmp_path / "gen.yaml"
    cfg_file.write_text("scdg:\n  max_rounds: 1\n  prompt_examples: 1\n  samples_per_prompt: 1\n")
    r = CliRunner().invoke(app, args + ["--config", str(cfg_file)])
    assert r.exit_code == 0, r.output
    assert "acceptance" in r.output and "reject reason" in r.output and "Cause-Effect(e1,e2)" in r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "scdg" and manifest["config"]["max_rounds"] == 1
    m = manifest["summary"]
    assert m["counts"]["relations"] == 18 and m["counts"]["generated"] == 18
    r2 = CliRunner().invoke(app, args + ["--config", str(cfg_file)])
    assert r2.exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["summary"]["counts"]["cache_hits"] == 18


# ------------------------------------------------------------------ cache faults and sharing (issue 14 item 6)

def test_corrupt_cache_entry_is_regenerated_with_a_warning(ray_local, tiny_llama, golden, tmp_path, caplog):
    cfg = _edkg(tiny_llama, tmp_path / "cache")
    generate_explanations(golden[:4], cfg, tmp_path / "a")
    cache = GenerationCache(tmp_path / "cache")
    [victim] = list(cache.keys())[:1]
    cache.path(victim).write_text('{"text": "half')  # damaged on disk
    caplog.set_level(logging.WARNING, logger="tkre.generate.cache")
    m = generate_explanations(golden[:4], cfg, tmp_path / "b")
    warned = [r.getMessage() for r in caplog.records if "corrupt entry" in r.getMessage()]
    assert len(warned) == 1 and victim in warned[0] and "regenerating" in warned[0]
    assert m["run"]["corrupt_cache_entries"] == 1
    assert m["counts"]["generated"] == 1 and m["counts"]["cache_hits"] == 3 and m["counts"]["written"] == 4
    assert cache.get(victim) is not None  # rewritten whole


def test_claims_of_a_live_run_are_respected_and_of_a_killed_run_ignored(tmp_path):
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tkre.generate.cache import GenerationCache\n"
         "cm = GenerationCache(sys.argv[1]).claim(sys.argv[2:])\ncm.__enter__()\nprint('CLAIMED', flush=True)\n"
         "time.sleep(600)\n", str(tmp_path), a, b], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "CLAIMED"
        cache = GenerationCache(tmp_path)
        with cache.claim([a, c]) as taken:
            assert taken == {a}  # b is the other run's too, but not asked for
            assert cache.claimed_by_others() == {a, b}
        assert cache.claimed_by_others() == {a, b}
    finally:
        holder.kill()  # SIGKILL: no `finally` runs in the holder
        holder.wait()
    with cache.claim([a, b]) as taken:
        assert taken == set()  # the dead run's claim is void
    assert list((tmp_path / ".claims").glob("*.json")) == []


SHARED_RUN = textwrap.dedent("""
    import json, sys
    from tkre.config import EDKGConfig, GeneratorConfig, SamplingConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.generate import generate_explanations

    model, cache, out, n = sys.argv[1:5]
    golden = sample_kshot(load_dataset("semeval"), 8, 1).train[:int(n)]
    gen = GeneratorConfig(model=model, cache_dir=cache, batch_size=2, sampling=SamplingConfig(temperature=0.0))
    m = generate_explanations(golden, EDKGConfig(generator=gen, max_new_tokens=8), out)
    print("RUN " + json.dumps({**m["run"], "written": m["counts"]["written"]}), flush=True)
""")


def test_two_concurrent_runs_over_one_cache_compute_each_row_once(ray_local, tiny_llama, tmp_path):
    n = 12
    (tmp_path / "run.py").write_text(SHARED_RUN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "run.py"), tiny_llama, str(tmp_path / "cache"),
                               str(tmp_path / f"out{i}"), str(n)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        runs.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("RUN "))[4:]))
    assert [r["written"] for r in runs] == [n, n]
    assert sum(r["generated"] for r in runs) == n, runs  # not 2n: each row computed once
    assert len(GenerationCache(tmp_path / "cache")) == n
    assert read_explanations(tmp_path / "out0") == read_explanations(tmp_path / "out1")

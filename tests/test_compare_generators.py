"""`tkre serve` (OpenAI-compatible server over the hf backend) and `tkre compare-generators` (a
generation-only sweep over generator settings + the comparison report), on a tiny Llama."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sweep_helpers import write_mini_dataset, write_sweep  # noqa: E402
from tiny_models import make_tiny_llama  # noqa: E402

from tkre.config import GeneratorConfig, OpenAIConfig, SamplingConfig  # noqa: E402
from tkre.errors import ConfigError  # noqa: E402

os.environ.setdefault("RAY_ADDRESS", "local")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep(tmp_path, semeval, model, port, **extra) -> dict:
    data = write_mini_dataset(semeval, tmp_path / "data")
    gen = {"backend": "hf", "model": model, "batch_size": 4, "sampling": {"temperature": 0.0}}
    return {"name": "gencmp", "base": {
        "data": {"dataset": "jsonl", "path": str(data), "k": 2, "seed": 1},
        "stages": {"pretrain_stage1": False, "pretrain_stage2": False, "finetune": False},
        "edkg": {"generator": gen, "max_new_tokens": 6},
        "scdg": {"samples_per_relation": 2, "samples_per_prompt": 2, "prompt_examples": 2, "max_rounds": 1,
                 "max_new_tokens": 10},
        "storage_path": str(tmp_path / "store")},
        "variants": {"hf_local": {},
                     "served": {"edkg.generator.backend": "openai",
                                "edkg.generator.openai.base_url": f"http://127.0.0.1:{port}/v1"},
                     **extra},
        "grid": {"variant": ["hf_local", "served", *extra]}, "resources": {"max_concurrent_trials": 1},
        "min_free_gb": 0, "trial_timeout_s": 900, "wandb": {"enabled": False}}


def test_paid_generator_without_prices_is_an_error_before_anything_runs(tmp_path, semeval, tiny_llama):
    from tkre.sweep.compare_generators import check_prices, local_servers
    from tkre.sweep.config import load_sweep

    paid = {"edkg.generator.backend": "openai", "edkg.generator.model": "gpt-4o-mini",
            "edkg.generator.openai.base_url": "https://api.openai.com/v1",
            "edkg.generator.price_per_m_input_tokens": 0.15}
    path = write_sweep(tmp_path / "s.yaml", _sweep(tmp_path, semeval, tiny_llama, 9999, paid=paid))
    sweep = load_sweep(path)
    with pytest.raises(ConfigError, match=r"s\.yaml: variant 'paid': edkg\.generator\.price_per_m_output_tokens"):
        check_prices(sweep, str(path))
    priced = {**paid, "edkg.generator.price_per_m_output_tokens": 0.6}
    check_prices(load_sweep(write_sweep(tmp_path / "ok.yaml", _sweep(tmp_path, semeval, tiny_llama, 9999,
                                                                      paid=priced))), "ok.yaml")
    # the loopback openai variant needs a server on 127.0.0.1:9999 serving the tiny model
    servers = local_servers(sweep)
    assert [(s.host, s.port, s.model) for s in servers] == [("127.0.0.1", 9999, tiny_llama)]


def test_serve_refuses_a_public_host(tiny_llama):
    from tkre.generate.serve import serve

    with pytest.raises(ConfigError, match="loopback"):
        serve(tiny_llama, host="0.0.0.0", port=0)


def test_served_model_answers_like_the_in_process_backend(tmp_path, tiny_llama):
    """The openai backend against `tkre serve` gives the hf backend's greedy texts, with usage."""
    from tkre.generate.backends import create_backend

    proc = subprocess.Popen([sys.executable, "-m", "tkre.cli", "serve", "--model", tiny_llama, "--port", "0",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("serving "):
                url = line.split(" at ")[-1].strip()
                break
        assert url and url.startswith("http://127.0.0.1:")
        prompts = ["Name a colour.", "Why is the sky blue?", "Say hello."]
        sampling = SamplingConfig(temperature=0.0).decoding(8)
        client = create_backend(GeneratorConfig(backend="openai", model="tiny",
                                                openai=OpenAIConfig(base_url=url, concurrency=3)))
        served = client.generate_rows(prompts, sampling, [1, 2, 3])
        local = create_backend(GeneratorConfig(backend="hf", model=tiny_llama, threads_per_actor=1))
        direct = local.generate_rows(prompts, sampling, [1, 2, 3])
        assert [r.error for r in served] == [None] * 3
        assert [r.text for r in served] == [r.text for r in direct]
        assert [r.tokens for r in served] == [r.tokens for r in direct]
        assert [r.input_tokens for r in served] == [r.input_tokens for r in direct] and direct[0].input_tokens > 5
        # a JSON-schema response format is enforced while decoding (even a random model answers the schema)
        import urllib.error
        import urllib.request

        def post(fmt: dict):
            body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40,
                               "temperature": 0, "response_format": fmt}).encode()
            req = urllib.request.Request(f"{url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())

        schema = {"type": "object", "properties": {"r": {"enum": ["yes", "no"]}}, "required": ["r"],
                  "additionalProperties": False}
        answer = post({"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}})
        assert json.loads(answer["choices"][0]["message"]["content"])["r"] in ("yes", "no")
        # another format is refused (the client then falls back to free text), never silently ignored
        with pytest.raises(urllib.error.HTTPError) as err:
            post({"type": "json_object"})
        assert err.value.code == 400 and b"not supported" in err.value.read()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_compare_generators_generation_only_end_to_end(tmp_path, ray_local, semeval, tiny_llama):
    """One command: a loopback server started for the openai setting, a generation-only sweep (no
    pre-training or fine-tuning), and the comparison tables + plots in the report."""
    from tkre.sweep.compare_generators import compare_generators

    port = _free_port()
    path = write_sweep(tmp_path / "gencmp.yaml", _sweep(tmp_path, semeval, tiny_llama, port))
    out, rep = compare_generators(path)
    rows = out.rows.set_index("variant")
    assert set(rows.index) == {"hf_local", "served"} and (rows["status"] == "ok").all()
    assert rows["test_micro_f1"].isna().all() and rows["artifact.finetune"].isna().all()  # generation only
    assert rows["artifact.stage1"].isna().all()
    relations = 4  # write_mini_dataset's relations, K = 2
    for v in ("hf_local", "served"):
        r = rows.loc[v]
        assert r["edkg.prompts"] == relations * 2 and r["scdg.asked"] == relations * 2
        assert r["edkg.input_tokens"] > 0 and 0 < r["edkg.output_tokens"] <= relations * 2 * 6
        assert r["scdg.cost_usd"] == 0.0 and r["edkg.cost_usd"] == 0.0
    assert rows.loc["served", "edkg.generator"] == f"openai:{tiny_llama}"
    # the same greedy model in process and behind the server: the same tokens
    assert rows.loc["served", "edkg.output_tokens"] == rows.loc["hf_local", "edkg.output_tokens"]
    assert rows.loc["served", "edkg.input_tokens"] == rows.loc["hf_local", "edkg.input_tokens"]
    md = rep.markdown_path.read_text()
    assert "### SCDG (synthetic samples)" in md and "### EDKG (explanations)" in md and "| served " in md
    names = {p.name for p in rep.plots}
    assert {"scdg_outcomes.png", "acceptance_vs_cost.png"} <= names and "f1_vs_tokens.png" not in names
    # the server the command started is gone
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    table = pd.read_parquet(out.results_path)
    assert json.loads(table.set_index("variant").loc["hf_local", "scdg.acceptance_json"])


def test_shipped_comparison_is_generation_only_with_three_offline_settings():
    from tkre.sweep.compare_generators import _settings, check_prices, local_servers
    from tkre.sweep.config import load_sweep, resolve_sweep_file

    path = resolve_sweep_file("generators_compare")
    sweep = load_sweep(path)
    settings = dict(_settings(sweep))
    assert len(settings) >= 3
    for cfg in settings.values():
        st = cfg.stages
        assert st.edkg and st.scdg and not (st.pretrain_stage1 or st.pretrain_stage2 or st.finetune)
    scdg = {v: (cfg.scdg.generator.backend, cfg.scdg.constrained) for v, cfg in settings.items()}
    assert ("hf", False) in scdg.values() and ("hf", True) in scdg.values()
    assert any(backend == "openai" for backend, _ in scdg.values())
    check_prices(sweep, str(path))  # all local: nothing to price
    assert [(s.host, s.port, s.model) for s in local_servers(sweep)] == [("127.0.0.1", 8765, "embedded:smollm2")]

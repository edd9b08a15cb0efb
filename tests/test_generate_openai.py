"""openai backend end to end against a local OpenAI-compatible server (tests/fixtures/openai_server.py)
serving a tiny Llama with transformers on 127.0.0.1: Ray Data actor pool, retries on injected HTTP
429/500, errors and time-outs counted (never a crash, never a bad record), API key never written."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tkre.config import DecodingConfig, EDKGConfig, GeneratorConfig, OpenAIConfig, SCDGConfig
from tkre.errors import ConfigError
from tkre.generate import generate_explanations, generate_synthetic, read_explanations, read_rejects, read_synthetic
from tkre.generate import parse
from tkre.generate.backends import backend_spec, create_backend

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

SERVER = Path(__file__).parent / "fixtures" / "openai_server.py"
KEY_ENV = "TKRE_TEST_OPENAI_KEY"
SECRET = "sk-test-do-not-leak-1234567890"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_srv"))


@contextmanager
def server(model: str, *extra: str):
    proc = subprocess.Popen([sys.executable, str(SERVER), "--model", model, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as r:
        return json.loads(r.read())


def _cfg(url: str, tmp_path, **openai) -> GeneratorConfig:
    return GeneratorConfig(backend="openai", model="tiny", cache_dir=str(tmp_path / "cache"), batch_size=4,
                           sampling={"temperature": 0.0},
                           openai=OpenAIConfig(base_url=f"{url}/v1", api_key_env=KEY_ENV, retry_base_s=0.05,
                                               **openai))


def test_openai_end_to_end_with_429_and_500_retried(ray_local, tiny_llama, semeval, tmp_path, monkeypatch, caplog):
    from tkre.data import sample_kshot

    monkeypatch.setenv(KEY_ENV, SECRET)
    golden = sample_kshot(semeval, 8, 1).train[:6]
    caplog.set_level(logging.DEBUG)
    with server(tiny_llama, "--fail", "429,500,500,503") as url:
        cfg = _cfg(url, tmp_path, max_retries=5, concurrency=2)
        m = generate_explanations(golden, EDKGConfig(generator=cfg, max_new_tokens=5), tmp_path / "out")
        s = stats(url)
    assert m["counts"]["errors"] == 0 and m["counts"]["written"] == 6 and m["counts"]["generated"] == 6
    assert s["injected"] == 4 and s["completions"] == 6 and s["requests"] == 10  # every failure was retried
    assert set(s["auth"]) == {f"Bearer {SECRET}"}  # the key went in the header ...
    assert 0 < m["tokens"] <= 30
    rows = read_explanations(tmp_path / "out")
    assert [r["source_id"] for r in rows] == [ex.id for ex in golden] and all(r["generator"] == "openai:tiny" for r in rows)
    # ... and nowhere else: not in outputs, manifest, cache or logs
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in caplog.text
    assert SECRET not in repr(backend_spec(cfg))


def test_server_errors_are_counted_never_a_crash(ray_local, tiny_llama, semeval, tmp_path):
    from tkre.data import relation_type_schema, sample_kshot

    golden = sample_kshot(semeval, 8, 1).train
    rel = golden[0].relation
    with server(tiny_llama, "--always", "500") as url:
        cfg = SCDGConfig(generator=_cfg(url, tmp_path, max_retries=1), max_rounds=1, samples_per_prompt=4,
                         max_new_tokens=8)
        m = generate_synthetic(golden, relation_type_schema(golden), cfg, tmp_path / "s", per_relation=8,
                               relations=[rel])
        s = stats(url)
    assert s["requests"] == 2 * 2  # 2 prompts, each tried twice (1 retry)
    assert m["counts"]["errors"] == 2 and m["counts"]["kept"] == 0 and m["reasons"] == {parse.GENERATION_ERROR: 2}
    assert read_synthetic(tmp_path / "s") == []
    assert all("HTTP 500" in r["detail"] for r in read_rejects(tmp_path / "s"))
    # errors are not cached: a second run asks again
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_timeouts_and_client_errors_become_row_errors(tiny_llama, tmp_path):
    s = DecodingConfig(temperature=0.0, max_new_tokens=4)
    with server(tiny_llama, "--hang", "2") as url:
        backend = create_backend(_cfg(url, tmp_path, timeout_s=0.3, max_retries=1))
        rows = backend.generate_rows(["a", "b"], s)
        assert all(r.text is None and "TimeoutError" in r.error for r in rows)
        assert backend.retries == 2
    with server(tiny_llama, "--always", "400") as url:
        backend = create_backend(_cfg(url, tmp_path, max_retries=3))
        [row] = backend.generate_rows(["a"], s)
        assert "HTTP 400" in row.error and backend.retries == 0  # client errors are not retried
    with server(tiny_llama) as url:
        backend = create_backend(_cfg(url, tmp_path))
        texts = backend.generate(["Say hi.", "Name a colour."], s)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    dead = create_backend(GeneratorConfig(backend="openai", model="x", openai=OpenAIConfig(
        base_url="http://127.0.0.1:9/v1", max_retries=1, retry_base_s=0.01, timeout_s=2)))
    [row] = dead.generate_rows(["a"], s)
    assert "gave up after 1 retries" in row.error  # connection refused, retried, then a row error


def test_hosted_openai_needs_the_key_env(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        backend_spec(GeneratorConfig(backend="openai", model="gpt-4o-mini",
                                     openai=OpenAIConfig(api_key_env="NO_SUCH_KEY_VAR")))

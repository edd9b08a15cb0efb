"""vllm backend up to the engine call (vLLM itself cannot be installed here): the engine arguments and
the replicas' Ray resources, the token ids and per-row sampling params (structured outputs for
constrained SCDG rows) an engine receives, row-by-row retry on a rejected batch, and the missing-extra /
embedded-model errors. `VLLMEngine` is the one class that calls vLLM; the tests put `FakeEngine` there.
One generation job loading its engine once across SCDG's rounds is tested in test_generate_engines.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tkre.config import DecodingConfig, GeneratorConfig, SamplingConfig, VLLMConfig
from tkre.errors import ConfigError, MissingDependencyError
from tkre.generate.backends import backend_spec
from tkre.generate.backends import vllm as vb
from tkre.generate.engines import replica_bundles, replica_options
from tkre.generate.schema import scdg_schema, schema_json

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

VLLM_INSTALLED = vb.importlib.util.find_spec("vllm") is not None


def _cfg(model="org/some-model", tp=2, **kw) -> GeneratorConfig:
    return GeneratorConfig(backend="vllm", model=model, revision=kw.pop("revision", "abc123"),
                           vllm=VLLMConfig(tensor_parallel_size=tp, num_replicas=3, batch_size=16, max_model_len=2048,
                                           gpu_memory_utilization=0.8, accelerator_type="A10G"),
                           sampling=SamplingConfig(temperature=0.6, top_p=0.9, seed=5), **kw)


class FakeEngine:
    """Stands where vllm.LLM is called: records what it gets; rejects a whole call when one prompt is
    longer than max_model_len, as vLLM does."""

    def __init__(self, model, kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []

    def generate(self, prompt_ids, params):
        self.calls.append((prompt_ids, params))
        if any(len(ids) > self.kwargs["max_model_len"] for ids in prompt_ids):
            raise ValueError("prompt longer than max_model_len")
        return [(f" out{len(ids)} ", 2) for ids in prompt_ids]


def test_engine_arguments_and_replica_resources(monkeypatch):
    monkeypatch.setattr(vb, "require_vllm", lambda: None)
    kw = vb.engine_kwargs(_cfg())
    assert kw == {"tensor_parallel_size": 2, "max_model_len": 2048, "gpu_memory_utilization": 0.8,
                  "distributed_executor_backend": "ray", "revision": "abc123", "tokenizer_revision": "abc123"}
    assert vb.engine_kwargs(_cfg(tp=1, revision=None))["distributed_executor_backend"] == "uni"
    tp2 = backend_spec(_cfg())
    assert tp2.replicas == 3 and tp2.batch_size == 16 and tp2.init_kwargs["engine_cls"] is vb.VLLMEngine
    # TP=2: the actor reserves no GPU itself; its placement group holds 2 one-GPU bundles of A10G nodes
    assert replica_options(tp2)["num_gpus"] == 0.0 and "accelerator_type" not in replica_options(tp2)
    a10g = {"accelerator_type:A10G": 0.001}
    assert replica_bundles(tp2) == [{"GPU": 1.0, "CPU": 1.0, **a10g}, {"GPU": 1.0, **a10g}]
    tp1 = backend_spec(_cfg(tp=1))
    assert replica_bundles(tp1) is None
    assert {k: replica_options(tp1)[k] for k in ("num_cpus", "num_gpus", "accelerator_type")} == {
        "num_cpus": 1.0, "num_gpus": 1.0, "accelerator_type": "A10G"}


def test_engine_gets_templated_token_ids_and_per_row_sampling_params(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny")
    backend = vb.VLLMBackend(_cfg(model=model, revision=None, system_prompt="be brief"), engine_cls=FakeEngine)
    assert backend.engine.model == model and backend.engine.kwargs["max_model_len"] == 2048
    schema = schema_json(scdg_schema("Cause-Effect(e1,e2)", 2))
    rows = backend.generate_rows(["Explain.", "Write samples."], backend.cfg.sampling.decoding(77), [42, 7],
                                 [None, schema])
    [(ids, params)] = backend.engine.calls  # one engine call for the batch
    text = backend.tokenizer.decode(ids[0])
    # the chat template is applied once, by tkre, at the configured revision; no second BOS
    assert "be brief" in text and "Explain." in text and text.rstrip().endswith("assistant")
    assert ids[0] == vb.prompt_ids(backend.tokenizer, "Explain.", "be brief")
    if backend.tokenizer.bos_token_id is not None:
        assert ids[0][:2] != [backend.tokenizer.bos_token_id] * 2
    assert params[0] == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 77, "seed": 42, "n": 1}
    assert params[1]["structured_outputs"] == {"json": schema} and params[1]["seed"] == 7
    assert [r.text for r in rows] == [f"out{len(ids[0])}", f"out{len(ids[1])}"]
    assert rows[0].tokens == 2 and rows[0].input_tokens == len(ids[0])
    assert [r.constrained for r in rows] == [False, True]


def test_a_rejected_batch_is_retried_row_by_row_on_the_same_engine(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny")
    backend = vb.VLLMBackend(_cfg(model=model, revision=None), engine_cls=FakeEngine)
    backend.engine.kwargs["max_model_len"] = 60
    rows = backend.generate_rows(["short", "long " * 80, "", "fine"], DecodingConfig(max_new_tokens=8))
    assert rows[0].text and rows[3].text and rows[2].error == "empty prompt"
    assert "max_model_len" in rows[1].error  # only the bad row fails
    assert len(backend.engine.calls) == 1 + 3  # the batch, then each row alone


def test_embedded_model_is_rejected_for_vllm():
    with pytest.raises(ConfigError, match="embedded GGUF model for the hf backend"):
        backend_spec(_cfg(model="embedded:smollm2"))


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_missing_vllm_extra_is_a_clear_error(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"pip install 'tkre\[vllm\]'"):
        backend_spec(_cfg())
    with pytest.raises(ModuleNotFoundError, match="vllm"):  # the real engine class is vLLM's
        vb.VLLMEngine("org/some-model", vb.engine_kwargs(_cfg()))

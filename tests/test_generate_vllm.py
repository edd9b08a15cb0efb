"""vllm backend: the real Ray 2.60 processor config and processor are built (vLLM itself cannot be
installed here); the config mapping (structured outputs for constrained SCDG rows included), per-row
pre/post-processing, one engine pool per call, and the missing-extra / embedded-model errors are tested."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tkre.config import DecodingConfig, GeneratorConfig, SamplingConfig, VLLMConfig
from tkre.errors import ConfigError, MissingDependencyError
from tkre.generate.schema import scdg_schema, schema_json
from tkre.generate.backends import backend_spec
from tkre.generate.backends import vllm as vb

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

VLLM_INSTALLED = vb.importlib.util.find_spec("vllm") is not None


def _cfg(model="org/some-model", **kw) -> GeneratorConfig:
    return GeneratorConfig(backend="vllm", model=model, revision="abc123",
                           vllm=VLLMConfig(tensor_parallel_size=2, num_replicas=3, batch_size=16, max_model_len=2048,
                                           gpu_memory_utilization=0.8, accelerator_type="A10G"),
                           sampling=SamplingConfig(temperature=0.6, top_p=0.9, seed=5), **kw)


def test_processor_config_mapping():
    from ray.data.llm import vLLMEngineProcessorConfig

    pc = vb.processor_config(_cfg())
    assert isinstance(pc, vLLMEngineProcessorConfig)
    assert pc.model_source == "org/some-model"
    assert pc.engine_kwargs["tensor_parallel_size"] == 2
    assert pc.engine_kwargs["max_model_len"] == 2048
    assert pc.engine_kwargs["gpu_memory_utilization"] == 0.8
    assert pc.engine_kwargs["revision"] == "abc123" and pc.engine_kwargs["tokenizer_revision"] == "abc123"
    assert pc.concurrency == (3, 3)  # a fixed pool of 3 engine replicas
    assert pc.get_concurrency() == {"min_size": 3, "max_size": 3}
    assert pc.batch_size == 16
    assert pc.accelerator_type == "A10G"  # the engine replicas land on A10G nodes
    assert pc.should_continue_on_error is True  # per-row error capture (ray#59194)
    assert pc.task_type == "generate"


def test_per_row_pre_and_post_processing(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny")
    cfg = _cfg(model=model, system_prompt="be brief")
    pre = vb.make_preprocess(cfg.sampling.decoding(77), cfg.system_prompt, model, None)
    row = pre({"key": "k1", "prompt": "Explain.", "seed": 42, "schema": "", "other": 1})
    assert row["key"] == "k1"
    # the chat template is applied here (at the configured revision), not by Ray's tokenizer stages
    assert "be brief" in row["prompt"] and "Explain." in row["prompt"] and row["prompt"].rstrip().endswith("assistant")
    assert row["sampling_params"] == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 77, "seed": 42, "n": 1}
    out = vb.postprocess({"key": "k1", "generated_text": " because. ", "num_generated_tokens": 3,
                          "num_input_tokens": 9, "schema": ""})
    assert out == {"key": "k1", "text": "because.", "tokens": 3, "input_tokens": 9, "error": None,
                   "constrained": False}
    assert vb.row_result({"key": "k", vb.ERROR_COLUMN: "CUDA OOM"}).error == "CUDA OOM"
    assert vb.row_result({"key": "k", "text": "ok", "tokens": 2}).text == "ok"
    assert vb.row_result(None).error


def test_constrained_rows_carry_the_schema_as_structured_outputs(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny")
    schema = schema_json(scdg_schema("Cause-Effect(e1,e2)", 2))
    pre = vb.make_preprocess(_cfg().sampling.decoding(64), None, model, None)
    row = pre({"key": "k", "prompt": "Write samples.", "seed": 1, "schema": schema})
    assert row["sampling_params"]["structured_outputs"] == {"json": schema}
    assert row["schema"] == schema  # travels through the engine to postprocess
    assert vb.postprocess({"key": "k", "generated_text": "{}", "num_generated_tokens": 1,
                           "schema": schema})["constrained"] is True
    # what Ray 2.60's engine stage does with it: StructuredOutputsParams(**sampling_params.pop("structured_outputs"))
    import inspect

    from ray.llm._internal.batch.stages import vllm_engine_stage

    src = inspect.getsource(vllm_engine_stage)
    assert 'sampling_params.pop("structured_outputs")' in src and "StructuredOutputsParams(" in src


def test_embedded_model_is_rejected_for_vllm():
    with pytest.raises(ConfigError, match="embedded GGUF model for the hf backend"):
        backend_spec(_cfg(model="embedded:smollm2"))


def test_one_engine_pool_per_call_never_per_row(monkeypatch):
    """VLLMBackend sends every prompt of a call through ONE processor run; a failed row is an error row,
    not a retry that would start another engine."""
    built = []

    class FakeDataset:
        def __init__(self, items):
            self.items = items

        def take_all(self):
            return [{"key": r["key"], "text": r["prompt"].upper(), "tokens": 1} if "BAD" not in r["prompt"]
                    else {"key": r["key"], vb.ERROR_COLUMN: "engine error"} for r in self.items]

    def fake_build(cfg, sampling, check_installed=True):
        built.append(cfg)
        return lambda ds: ds

    import ray.data

    monkeypatch.setattr(vb, "build_vllm_processor", fake_build)
    monkeypatch.setattr(ray.data, "from_items", lambda items: FakeDataset(items))
    backend = vb.VLLMBackend(_cfg())
    rows = backend.generate_rows(["a", "BAD", "", "c"], DecodingConfig(max_new_tokens=8), [1, 2, 3, 4],
                                 [None, None, None, "{}"])
    assert len(built) == 1  # one processor (engine pool) for the whole call
    assert [r.text for r in rows] == ["A", None, None, "C"] and rows[1].error == "engine error"
    assert rows[2].error == "empty prompt" and rows[3].constrained is True


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_missing_vllm_extra_is_a_clear_error():
    with pytest.raises(MissingDependencyError, match=r"pip install 'tkre\[vllm\]'"):
        backend_spec(_cfg())
    with pytest.raises(MissingDependencyError, match="vllm"):
        vb.build_vllm_processor(_cfg(), DecodingConfig(max_new_tokens=8))


def test_processor_builds_up_to_the_engine(ray_local, tmp_path):
    """Everything up to the engine call: Ray's real build_processor with our config, on a local model."""
    model = make_tiny_llama(tmp_path / "tiny")
    processor = vb.build_vllm_processor(_cfg(model=model), DecodingConfig(max_new_tokens=8), check_installed=False)
    names = processor.list_stage_names()
    # the engine tokenises and detokenises itself, at the configured revision: no second detokenisation
    assert names == ["vLLMEngineStage"]
    engine = processor.get_stage_by_name("vLLMEngineStage")
    kw = engine.fn_constructor_kwargs
    assert kw["model"] == model and kw["engine_kwargs"]["tensor_parallel_size"] == 2
    assert kw["batch_size"] == 16 and kw["should_continue_on_error"] is True
    assert engine.map_batches_kwargs["compute"].min_size == 3
    assert kw["engine_kwargs"]["revision"] == kw["engine_kwargs"]["tokenizer_revision"] == "abc123"

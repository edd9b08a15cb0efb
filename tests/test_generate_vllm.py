"""vllm backend: the real Ray 2.60 processor config and processor are built (vLLM itself cannot be
installed here); the config mapping, per-row pre/post-processing and the missing-extra error are tested."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tkre.config import DecodingConfig, GeneratorConfig, SamplingConfig, VLLMConfig
from tkre.errors import MissingDependencyError
from tkre.generate.backends import backend_spec
from tkre.generate.backends import vllm as vb

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_llama  # noqa: E402

VLLM_INSTALLED = vb.importlib.util.find_spec("vllm") is not None


def _cfg(model="org/some-model", **kw) -> GeneratorConfig:
    return GeneratorConfig(backend="vllm", model=model, revision="abc123",
                           vllm=VLLMConfig(tensor_parallel_size=2, num_replicas=3, batch_size=16, max_model_len=2048,
                                           gpu_memory_utilization=0.8),
                           sampling=SamplingConfig(temperature=0.6, top_p=0.9, seed=5), **kw)


def test_processor_config_mapping():
    from ray.data.llm import vLLMEngineProcessorConfig

    pc = vb.processor_config(_cfg())
    assert isinstance(pc, vLLMEngineProcessorConfig)
    assert pc.model_source == "org/some-model"
    assert pc.engine_kwargs["tensor_parallel_size"] == 2
    assert pc.engine_kwargs["max_model_len"] == 2048
    assert pc.engine_kwargs["gpu_memory_utilization"] == 0.8
    assert pc.engine_kwargs["revision"] == "abc123"
    assert pc.concurrency == (3, 3)  # a fixed pool of 3 engine replicas
    assert pc.get_concurrency() == {"min_size": 3, "max_size": 3}
    assert pc.batch_size == 16
    assert pc.should_continue_on_error is True  # per-row error capture (ray#59194)
    assert pc.task_type == "generate"


def test_per_row_pre_and_post_processing():
    cfg = _cfg(system_prompt="be brief")
    pre = vb.make_preprocess(cfg.sampling.decoding(77), cfg.system_prompt)
    row = pre({"key": "k1", "prompt": "Explain.", "seed": 42, "other": 1})
    assert row["key"] == "k1"
    assert row["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Explain."}]
    assert row["sampling_params"] == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 77, "seed": 42, "n": 1}
    out = vb.postprocess({"key": "k1", "generated_text": " because. ", "num_generated_tokens": 3})
    assert out == {"key": "k1", "text": "because.", "tokens": 3, "error": None}
    assert vb.row_result({"key": "k", vb.ERROR_COLUMN: "CUDA OOM"}).error == "CUDA OOM"
    assert vb.row_result({"key": "k", "text": "ok", "tokens": 2}).text == "ok"
    assert vb.row_result(None).error


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
    assert names == ["ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"]
    engine = processor.get_stage_by_name("vLLMEngineStage")
    kw = engine.fn_constructor_kwargs
    assert kw["model"] == model and kw["engine_kwargs"]["tensor_parallel_size"] == 2
    assert kw["batch_size"] == 16 and kw["should_continue_on_error"] is True
    assert engine.map_batches_kwargs["compute"].min_size == 3

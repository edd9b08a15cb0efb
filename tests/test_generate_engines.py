"""One generation job loads its engines once: a 3-round SCDG job constructs one engine per replica,
not one per round, for the vllm backend (its engine class substituted where vLLM would be called, on a
local Ray that declares GPUs of type A10G, so the replicas' GPU requests really schedule) and for the
hf backend (a real tiny model)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import ray

from tkre.config import GeneratorConfig, SamplingConfig, SCDGConfig, VLLMConfig
from tkre.data import relation_type_schema, sample_kshot
from tkre.generate import generate_synthetic
from tkre.generate import synthetic as synthetic_module
from tkre.generate.backends import backend_spec
from tkre.generate.backends import vllm as vb
from tkre.generate.backends.hf import HFBackend

sys.path.insert(0, str(Path(__file__).parent))
from sweep_helpers import wait_until  # noqa: E402
from tiny_models import make_tiny_llama  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the engine actors cannot import tests


class CountingEngine:
    """Stands where vllm.LLM is built: notes each construction (in a file: engines live in actors)."""

    log: str = ""

    def __init__(self, model, kwargs):
        import ray

        with open(self.log, "a") as f:
            f.write(f"{model} {kwargs['tensor_parallel_size']} {ray.get_gpu_ids()}\n")

    def generate(self, prompt_ids, params):
        return [("no sample here", 3) for _ in prompt_ids]  # every relation stays short: all rounds run


class CountingHF(HFBackend):
    log: str = ""

    def __init__(self, *args, **kwargs):
        with open(self.log, "a") as f:
            f.write("hf\n")
        super().__init__(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _scdg_job(golden, gen: GeneratorConfig, spec, out: Path, monkeypatch) -> dict:
    monkeypatch.setattr(synthetic_module, "backend_spec", lambda cfg: spec)
    cfg = SCDGConfig(generator=gen, samples_per_relation=2, samples_per_prompt=2, max_new_tokens=8, max_rounds=3)
    relations = sorted({ex.relation for ex in golden})[:2]
    return generate_synthetic(golden, relation_type_schema(golden), cfg, out, relations=relations)


def test_vllm_scdg_job_builds_one_engine_across_its_rounds(ray_with_gpus, semeval, tiny_llama, tmp_path,
                                                           monkeypatch):
    golden = sample_kshot(semeval, 8, 1).train
    gen = GeneratorConfig(backend="vllm", model=tiny_llama, cache_dir=str(tmp_path / "cache"),
                          vllm=VLLMConfig(tensor_parallel_size=1, num_replicas=1, accelerator_type="A10G"),
                          sampling=SamplingConfig(temperature=0.0))
    monkeypatch.setattr(vb, "require_vllm", lambda: None)
    CountingEngine.log = str(tmp_path / "engines.log")
    spec = backend_spec(gen)
    spec = dataclasses.replace(spec, init_kwargs={**spec.init_kwargs, "engine_cls": CountingEngine})
    manifest = _scdg_job(golden, gen, spec, tmp_path / "out", monkeypatch)
    assert manifest["rounds"] == 3 and manifest["counts"]["generated"] > 0
    built = Path(CountingEngine.log).read_text().splitlines()
    assert len(built) == 1, built  # one engine for the job, not one per round
    model, tp, gpus = built[0].split(" ", 2)
    assert model == tiny_llama and tp == "1" and gpus != "[]"  # the actor holds a GPU (one of the declared)
    assert manifest["engines_started"] == 1
    # given back when the job ended (ray.kill returns before the actor is gone: wait for the release)
    assert wait_until(lambda: ray.available_resources().get("GPU") == 2.0, 30), ray.available_resources()


def test_hf_scdg_job_loads_its_model_once_per_actor(ray_local, semeval, tiny_llama, tmp_path, monkeypatch):
    golden = sample_kshot(semeval, 8, 1).train
    gen = GeneratorConfig(model=tiny_llama, cache_dir=str(tmp_path / "cache"), threads_per_actor=1,
                          sampling=SamplingConfig(temperature=0.0))
    CountingHF.log = str(tmp_path / "loads.log")
    spec = dataclasses.replace(backend_spec(gen), cls=CountingHF)
    manifest = _scdg_job(golden, gen, spec, tmp_path / "out", monkeypatch)
    assert manifest["rounds"] == 3 and manifest["engines_started"] == 1
    assert Path(CountingHF.log).read_text().splitlines() == ["hf"]  # one load for 3 rounds

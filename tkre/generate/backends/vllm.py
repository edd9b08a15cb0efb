"""vLLM backend: Ray Data's LLM processor (`ray.data.llm.build_processor` + `vLLMEngineProcessorConfig`).

Config mapping (GeneratorConfig -> processor config, Ray 2.60 field names):
  model                        -> model_source
  vllm.tensor_parallel_size    -> engine_kwargs["tensor_parallel_size"]
  vllm.max_model_len           -> engine_kwargs["max_model_len"]
  vllm.gpu_memory_utilization  -> engine_kwargs["gpu_memory_utilization"]
  vllm.num_replicas            -> concurrency=(n, n): a fixed pool of n engine replicas (= GPUs / TP)
  vllm.batch_size              -> batch_size
  sampling + the stage's budget -> per-row sampling_params (temperature, top_p, max_tokens, seed)
  per-row error capture        -> should_continue_on_error=True (failed rows carry __inference_error__)

The engine needs `vllm` (`pip install 'tkre[vllm]'`, GPU machines only); without it `spec()` fails
with a MissingDependencyError before any work starts.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from tkre.config import DecodingConfig, GeneratorConfig
from tkre.errors import MissingDependencyError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import chat_messages

INSTALL = "pip install 'tkre[vllm]'"
ERROR_COLUMN = "__inference_error__"


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise MissingDependencyError(f"the vllm generation backend needs vLLM and Ray's LLM extra: run `{INSTALL}` "
                                     "(on a machine with a CUDA GPU), or use --backend hf / openai")


def sampling_params(sampling: DecodingConfig, seed: int) -> dict[str, Any]:
    """vLLM SamplingParams fields for one row."""
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens,
            "seed": int(seed), "n": 1}


def processor_config(cfg: GeneratorConfig):
    """The real `vLLMEngineProcessorConfig` for `cfg` (builds without vLLM installed)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    v = cfg.vllm
    return vLLMEngineProcessorConfig(
        model_source=cfg.model,
        engine_kwargs={"tensor_parallel_size": v.tensor_parallel_size, "max_model_len": v.max_model_len,
                       "gpu_memory_utilization": v.gpu_memory_utilization,
                       **({"revision": cfg.revision} if cfg.revision else {})},
        concurrency=(v.num_replicas, v.num_replicas),
        batch_size=v.batch_size,
        accelerator_type=None,
        should_continue_on_error=True,
        chat_template_stage=True, tokenize_stage=True, detokenize_stage=True,
    )


def make_preprocess(sampling: DecodingConfig, system: str | None):
    """Row {key, prompt, seed, ...} -> the processor's input columns (messages + sampling_params)."""
    def preprocess(row: dict) -> dict:
        return {"key": row["key"], "messages": chat_messages(row["prompt"], system),
                "sampling_params": sampling_params(sampling, row["seed"])}
    return preprocess


def postprocess(row: dict) -> dict:
    """Engine output row -> tkre's generation columns (error rows bypass this in Ray)."""
    return {"key": row["key"], "text": (row.get("generated_text") or "").strip(),
            "tokens": int(row.get("num_generated_tokens") or 0),
            "input_tokens": int(row.get("num_input_tokens") or 0), "error": None}


def build_vllm_processor(cfg: GeneratorConfig, sampling: DecodingConfig, *, check_installed: bool = True):
    """`build_processor(processor_config(cfg), preprocess, postprocess)`; needs vLLM unless told not to check."""
    if check_installed:
        require_vllm()
    from ray.data.llm import build_processor

    return build_processor(processor_config(cfg), preprocess=make_preprocess(sampling, cfg.system_prompt),
                           postprocess=postprocess)


def spec(cfg: GeneratorConfig) -> BackendSpec:
    require_vllm()
    return BackendSpec(name="vllm", cls="tkre.generate.backends.vllm:VLLMBackend",
                       init_kwargs={"cfg": cfg}, model_id=cfg.model, revision=cfg.revision or "main",
                       generator=f"vllm:{cfg.model}", num_cpus=1.0, num_gpus=0.0, ray_native=True)


class VLLMBackend(Backend):
    """The one interface on top of the processor: builds a Ray Dataset of the prompts and runs it."""

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int]) -> list[RowResult]:
        import ray

        ds = ray.data.from_items([{"key": str(i), "prompt": p, "seed": s} for i, (p, s) in enumerate(zip(prompts, seeds))])
        rows = {r["key"]: r for r in build_vllm_processor(self.cfg, sampling)(ds).take_all()}
        return [row_result(rows.get(str(i))) for i in range(len(prompts))]


def row_result(row: dict | None) -> RowResult:
    if row is None:
        return RowResult(None, 0, "row missing from the processor output")
    if row.get(ERROR_COLUMN):
        return RowResult(None, 0, str(row[ERROR_COLUMN])[:300])
    return RowResult(row.get("text") or "", int(row.get("tokens") or 0), input_tokens=int(row.get("input_tokens") or 0))

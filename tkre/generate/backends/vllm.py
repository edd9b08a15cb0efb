"""vLLM backend: Ray Data's LLM processor (`ray.data.llm.build_processor` + `vLLMEngineProcessorConfig`).

Config mapping (GeneratorConfig -> processor config, Ray 2.60 field names):
  model                        -> model_source
  vllm.tensor_parallel_size    -> engine_kwargs["tensor_parallel_size"]
  vllm.max_model_len           -> engine_kwargs["max_model_len"]
  vllm.gpu_memory_utilization  -> engine_kwargs["gpu_memory_utilization"]
  vllm.num_replicas            -> concurrency=(n, n): a fixed pool of n engine replicas (= GPUs / TP)
  vllm.batch_size              -> batch_size
  vllm.accelerator_type        -> accelerator_type (each replica's GPUs on a node of that type)
  revision                     -> engine_kwargs["revision"] and ["tokenizer_revision"]
  sampling + the stage's budget -> per-row sampling_params (temperature, top_p, max_tokens, seed)
  SCDG schema (constrained)    -> per-row sampling_params["structured_outputs"] = {"json": schema}
                                  (Ray 2.60 turns it into vllm.sampling_params.StructuredOutputsParams)
  per-row error capture        -> should_continue_on_error=True (failed rows carry __inference_error__)

Tokenisation: Ray's ChatTemplate/Tokenize/Detokenize stages load the tokenizer without a revision
(Ray 2.60's stage constructors take none), and with `detokenize_stage` on, the output is decoded twice
(vLLM's SamplingParams detokenize by default). So all three stages are off: tkre applies the chat
template in its preprocess with the tokenizer at the configured revision (loaded once per worker
process), and the engine tokenises the prompt and detokenises the output itself, with its own
tokenizer at `tokenizer_revision`.

The engine needs `vllm` (`pip install 'tkre[vllm]'`, GPU machines only); without it `spec()` fails
with a MissingDependencyError before any work starts.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from tkre.config import EMBEDDED_GENERATOR, DecodingConfig, GeneratorConfig
from tkre.errors import ConfigError, MissingDependencyError
from tkre.generate.backends.base import Backend, BackendSpec, RowResult
from tkre.generate.prompts import as_chat_text

INSTALL = "pip install 'tkre[vllm]'"
ERROR_COLUMN = "__inference_error__"


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise MissingDependencyError(f"the vllm generation backend needs vLLM and Ray's LLM extra: run `{INSTALL}` "
                                     "(on a machine with a CUDA GPU), or use --backend hf / openai")


def check_model(model: str) -> None:
    """vLLM loads Hugging Face models (Hub ids or folders), not tkre's embedded GGUF generator."""
    if model.startswith("embedded:"):
        raise ConfigError(f"generation model {model!r} is tkre's embedded GGUF model for the hf backend; the vllm "
                          f"backend needs a Hugging Face model id or folder (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)"
                          f", or use --backend hf with {EMBEDDED_GENERATOR}")


def sampling_params(sampling: DecodingConfig, seed: int, schema: str | None = None) -> dict[str, Any]:
    """vLLM SamplingParams fields for one row; a JSON schema becomes vLLM's structured outputs."""
    params: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                              "max_tokens": sampling.max_new_tokens, "seed": int(seed), "n": 1}
    if schema:
        params["structured_outputs"] = {"json": schema}
    return params


def processor_config(cfg: GeneratorConfig):
    """The real `vLLMEngineProcessorConfig` for `cfg` (builds without vLLM installed)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    v = cfg.vllm
    return vLLMEngineProcessorConfig(
        model_source=cfg.model,
        engine_kwargs={"tensor_parallel_size": v.tensor_parallel_size, "max_model_len": v.max_model_len,
                       "gpu_memory_utilization": v.gpu_memory_utilization,
                       **({"revision": cfg.revision, "tokenizer_revision": cfg.revision} if cfg.revision else {})},
        concurrency=(v.num_replicas, v.num_replicas),
        batch_size=v.batch_size,
        accelerator_type=v.accelerator_type,
        should_continue_on_error=True,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str, revision: str | None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, revision=revision)


def make_preprocess(sampling: DecodingConfig, system: str | None, model: str, revision: str | None = None):
    """Row {key, prompt, seed, schema, ...} -> the engine's input columns (chat-templated prompt + sampling_params)."""
    def preprocess(row: dict) -> dict:
        schema = row.get("schema") or ""
        return {"key": row["key"], "schema": schema,
                "prompt": as_chat_text(_tokenizer(model, revision), row["prompt"], system),
                "sampling_params": sampling_params(sampling, row["seed"], schema or None)}
    return preprocess


def postprocess(row: dict) -> dict:
    """Engine output row -> tkre's generation columns (error rows bypass this in Ray)."""
    return {"key": row["key"], "text": (row.get("generated_text") or "").strip(),
            "tokens": int(row.get("num_generated_tokens") or 0),
            "input_tokens": int(row.get("num_input_tokens") or 0), "error": None,
            "constrained": bool(row.get("schema"))}


def build_vllm_processor(cfg: GeneratorConfig, sampling: DecodingConfig, *, check_installed: bool = True):
    """`build_processor(processor_config(cfg), preprocess, postprocess)`; needs vLLM unless told not to check."""
    if check_installed:
        require_vllm()
    from ray.data.llm import build_processor

    return build_processor(processor_config(cfg),
                           preprocess=make_preprocess(sampling, cfg.system_prompt, cfg.model, cfg.revision),
                           postprocess=postprocess)


def spec(cfg: GeneratorConfig) -> BackendSpec:
    check_model(cfg.model)
    require_vllm()
    return BackendSpec(name="vllm", cls="tkre.generate.backends.vllm:VLLMBackend",
                       init_kwargs={"cfg": cfg}, model_id=cfg.model, revision=cfg.revision or "main",
                       generator=f"vllm:{cfg.model}", num_cpus=1.0, num_gpus=0.0, ray_native=True)


class VLLMBackend(Backend):
    """The one interface on top of the processor: all prompts of a call go through ONE processor run
    (one engine pool), never one engine per batch or per row."""

    #: the processor already isolates failed rows (should_continue_on_error); a row-by-row retry would
    #: start an engine pool per row
    retry_rows_alone = False

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        import ray

        ds = ray.data.from_items([{"key": str(i), "prompt": p, "seed": int(seed), "schema": schema or ""}
                                  for i, (p, seed, schema) in enumerate(zip(prompts, seeds, schemas))])
        rows = {r["key"]: r for r in build_vllm_processor(self.cfg, sampling)(ds).take_all()}
        return [row_result(rows.get(str(i)), constrained=bool(schema)) for i, schema in enumerate(schemas)]


def row_result(row: dict | None, *, constrained: bool = False) -> RowResult:
    if row is None:
        return RowResult(None, 0, "row missing from the processor output")
    if row.get(ERROR_COLUMN):
        return RowResult(None, 0, str(row[ERROR_COLUMN])[:300])
    return RowResult(row.get("text") or "", int(row.get("tokens") or 0), input_tokens=int(row.get("input_tokens") or 0),
                     constrained=constrained)

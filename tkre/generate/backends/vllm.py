"""vLLM backend: one vLLM engine (`vllm.LLM`) per engine actor of a generation job.

The engine is built once per actor and kept for the whole job (tkre/generate/engines.py says why an
actor pool rather than `ray.data.llm`'s processor, which started an engine pool per SCDG round, or a
Ray Serve LLM deployment). Placement follows Ray's own vLLM stage: at TP=1 the actor reserves one GPU
and runs vLLM's single-process executor ("uni"); at TP>1 it runs in a placement group of TP one-GPU
bundles on one node (STRICT_PACK: tensor-parallel GPUs share a node; the first bundle also holds the
actor's CPU), and vLLM's Ray executor puts its workers there.

Config mapping (GeneratorConfig -> engine and actors):
  model                        -> LLM(model=...)
  revision                     -> revision and tokenizer_revision
  vllm.tensor_parallel_size    -> tensor_parallel_size (+ distributed_executor_backend uni / ray)
  vllm.max_model_len           -> max_model_len
  vllm.gpu_memory_utilization  -> gpu_memory_utilization
  vllm.num_replicas            -> engine actors of the job (one engine each)
  vllm.batch_size              -> rows per batch sent to an actor (the engine batches them continuously)
  vllm.accelerator_type        -> the actor's accelerator_type (TP=1), or `accelerator_type:<name>` in
                                  every bundle of its placement group (TP>1), as Ray does
  sampling + the stage's budget -> per-row SamplingParams (temperature, top_p, max_tokens, seed, n=1)
  SCDG schema (constrained)    -> per-row structured_outputs=StructuredOutputsParams(json=schema)

Tokenisation: tkre applies the chat template with the tokenizer at the configured revision (loaded
once per actor) and hands the engine token ids, so nothing is templated or tokenised twice; the engine
detokenises the output once. Per-row errors: vLLM rejects a whole `generate` call for one bad request
(e.g. a prompt longer than max_model_len), so a failed batch is retried row by row on the same engine
(`Backend.retry_rows_alone`: cheap now that the engine stays loaded) and only the bad row fails.

The engine needs `vllm` (`pip install 'tkre[vllm]'`, GPU machines only); without it `spec()` fails
with a MissingDependencyError before any work starts. `VLLMEngine` is the only code that calls vLLM.
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


def engine_kwargs(cfg: GeneratorConfig) -> dict[str, Any]:
    """`vllm.LLM(model, **engine_kwargs(cfg))`."""
    v = cfg.vllm
    return {"tensor_parallel_size": v.tensor_parallel_size, "max_model_len": v.max_model_len,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "distributed_executor_backend": "uni" if v.tensor_parallel_size == 1 else "ray",
            **({"revision": cfg.revision, "tokenizer_revision": cfg.revision} if cfg.revision else {})}


class VLLMEngine:
    """The boundary to vLLM: the engine, built once, and one `LLM.generate` call per batch."""

    def __init__(self, model: str, kwargs: dict[str, Any]):
        import vllm

        self.llm = vllm.LLM(model=model, **kwargs)

    def generate(self, prompt_ids: list[list[int]], params: list[dict[str, Any]]) -> list[tuple[str, int]]:
        """(text, generated tokens) per prompt, in order."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        per_row = []
        for p in params:
            p = dict(p)
            structured = p.pop("structured_outputs", None)
            per_row.append(SamplingParams(**p, **({"structured_outputs": StructuredOutputsParams(**structured)}
                                                  if structured else {})))
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], per_row, use_tqdm=False)
        return [(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outs]


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str, revision: str | None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, revision=revision)


def prompt_ids(tokenizer, prompt: str, system: str | None) -> list[int]:
    """The token ids of one prompt with the chat template applied (no second BOS when templated)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(as_chat_text(tokenizer, prompt, system), add_special_tokens=not templated)["input_ids"])


def spec(cfg: GeneratorConfig) -> BackendSpec:
    check_model(cfg.model)
    require_vllm()
    v = cfg.vllm
    tp = v.tensor_parallel_size
    return BackendSpec(name="vllm", cls="tkre.generate.backends.vllm:VLLMBackend",
                       init_kwargs={"cfg": cfg, "engine_cls": VLLMEngine}, model_id=cfg.model,
                       revision=cfg.revision or "main", generator=f"vllm:{cfg.model}",
                       num_cpus=1.0, num_gpus=1.0 if tp == 1 else 0.0, replicas=v.num_replicas,
                       batch_size=v.batch_size, accelerator_type=v.accelerator_type,
                       bundles=[{"GPU": 1.0, "CPU": 1.0}] + [{"GPU": 1.0}] * (tp - 1) if tp > 1 else None)


class VLLMBackend(Backend):
    """One engine per instance (one per engine actor, for the whole generation job)."""

    def __init__(self, cfg: GeneratorConfig, engine_cls: type = VLLMEngine):
        self.cfg = cfg
        self.tokenizer = _tokenizer(cfg.model, cfg.revision)
        self.engine = engine_cls(cfg.model, engine_kwargs(cfg))

    def _generate_batch(self, prompts: list[str], sampling: DecodingConfig, seeds: list[int],
                        schemas: list[str | None]) -> list[RowResult]:
        ids = [prompt_ids(self.tokenizer, p, self.cfg.system_prompt) for p in prompts]
        outs = self.engine.generate(ids, [sampling_params(sampling, seed, schema)
                                          for seed, schema in zip(seeds, schemas)])
        return [RowResult((text or "").strip(), int(n), input_tokens=len(row_ids), constrained=bool(schema))
                for (text, n), row_ids, schema in zip(outs, ids, schemas)]

"""Do a vLLM generator's weights fit the GPUs it asks for? (`tkre sweep --plan`)

A generator on the vllm backend names an accelerator type (`vllm.accelerator_type`, Ray's names) and
a tensor-parallel size; its weights are split over that many GPUs, and vLLM gives weights plus KV
cache `gpu_memory_utilization` of each GPU. Weights = parameters x bytes of the model's dtype, the
parameters counted exactly from the model's config on the meta device (transformers + accelerate's
`init_empty_weights`: no weights are downloaded or allocated). When the config cannot be read
(offline planning, a gated model without a token) the count comes from the size in the model's name
("Llama-2-13b" -> 13e9, fp16) and the line says so.

Llama-2-13B in fp16 is 26 GB: at tensor_parallel_size 1 it does not fit an A10G's 24 GB (the load
fails with an out-of-memory error), at 2 it needs 13 GB per GPU.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

#: GPU memory (GB, as sold) of Ray's accelerator type names (`ray.util.accelerators`).
ACCELERATOR_MEMORY_GB = {
    "T4": 16, "V100": 16, "A10G": 24, "L4": 24, "L40S": 48, "A100": 40, "A100-40G": 40, "A100-80G": 80,
    "H100": 80, "H200": 141, "B200": 180,
}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "int8": 1}


class Weights(NamedTuple):
    params: float
    dtype_bytes: int
    source: str  # "config" or "model name"

    @property
    def gb(self) -> float:
        return self.params * self.dtype_bytes / 1e9


@functools.lru_cache(maxsize=32)
def model_weights(model: str, revision: str | None = None) -> Weights | None:
    """Parameters and dtype of `model` from its config (exact), else from its name, else None.

    The config is read from a local folder or the Hugging Face cache only: `--plan` never touches the
    network (a Hub lookup retries with back-off for tens of seconds where the Hub is unreachable)."""
    try:
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model, revision=revision, local_files_only=True)
        with init_empty_weights():
            meta = AutoModelForCausalLM.from_config(config)
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float16
        name = str(dtype).replace("torch.", "")
        return Weights(float(sum(p.numel() for p in meta.parameters())), _DTYPE_BYTES.get(name, 2), "config")
    except Exception:  # noqa: BLE001 -- offline, gated, not a causal LM: fall back to the name
        m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model.split("/")[-1])
        return Weights(float(m.group(1)) * 1e9, 2, "model name") if m else None


def memory_check(model: str, *, accelerator: str | None, tensor_parallel_size: int, gpu_memory_utilization: float,
                 revision: str | None = None) -> tuple[bool | None, str]:
    """(fits: True/False, None when unknown; one line saying why)."""
    gpu_gb = ACCELERATOR_MEMORY_GB.get(accelerator or "")
    weights = model_weights(model, revision)
    where = f"accelerator {accelerator or 'any (vllm.accelerator_type unset)'}, tensor_parallel_size {tensor_parallel_size}"
    if weights is None:
        return None, f"{model}: {where}; weights unknown (config unreadable, no size in the name)"
    per_gpu = weights.gb / tensor_parallel_size
    what = (f"weights {weights.gb:.1f} GB ({weights.params / 1e9:.2f} B params x {weights.dtype_bytes} bytes, from its "
            f"{weights.source}) = {per_gpu:.1f} GB per GPU")
    if gpu_gb is None:
        known = "" if accelerator is None else f" ({accelerator!r} not in tkre's table: {', '.join(ACCELERATOR_MEMORY_GB)})"
        return None, f"{model}: {where}; {what}; GPU memory unknown{known}"
    budget = gpu_gb * gpu_memory_utilization
    if per_gpu > budget:
        need = next((tp for tp in (2, 4, 8) if weights.gb / tp <= budget), None)
        hint = f"; raise tensor_parallel_size to {need}" if need else "; use a larger GPU"
        return False, (f"{model}: {where}; {what} > {budget:.1f} GB ({gpu_gb} GB x gpu_memory_utilization "
                       f"{gpu_memory_utilization:g}): DOES NOT FIT, the engine fails at load{hint}")
    return True, (f"{model}: {where}; {what} <= {budget:.1f} GB ({gpu_gb} GB x gpu_memory_utilization "
                  f"{gpu_memory_utilization:g}): fits, {budget - per_gpu:.1f} GB per GPU left for the KV cache")

"""Generation backends behind one interface: `generate(prompts, sampling) -> texts`, batched.

- `hf`: transformers `generate` on CPU or GPU, left-padded batches (the embedded default model);
- `vllm`: a vLLM engine per replica, kept for the whole job (`pip install 'tkre[vllm]'`);
- `openai`: any OpenAI-compatible chat-completions server over HTTP.

Each backend module has `spec(cfg) -> BackendSpec`: the driver-side checks (model path, extras, API
key) and what an engine actor (tkre/generate/engines.py) needs to build the backend once per job. The
registry maps names to modules, so a new backend is one module plus one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tkre.generate.backends.base import Backend, BackendSpec, GenerationFailed, RowResult

if TYPE_CHECKING:
    from tkre.config import GeneratorConfig

#: backend name -> module with `spec(cfg)`
BACKENDS = {
    "hf": "tkre.generate.backends.hf",
    "vllm": "tkre.generate.backends.vllm",
    "openai": "tkre.generate.backends.openai",
}


def backend_spec(cfg: "GeneratorConfig") -> BackendSpec:
    """Check the backend's requirements in the driver and describe how to build it."""
    from tkre.errors import ConfigError

    if cfg.backend not in BACKENDS:
        raise ConfigError(f"unknown generation backend {cfg.backend!r} (known: {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[cfg.backend]).spec(cfg)


def create_backend(cfg: "GeneratorConfig") -> Backend:
    """Build a backend in this process (no Ray): `create_backend(cfg).generate(prompts, cfg.sampling.decoding(n))`."""
    return backend_spec(cfg).build()


__all__ = ["BACKENDS", "Backend", "BackendSpec", "GenerationFailed", "RowResult", "backend_spec",
           "create_backend"]

"""LLM knowledge generation (method sections 1-2): EDKG explanations and SCDG synthetic samples.

    from tkre.generate import generate_explanations, generate_synthetic, read_explanations, read_synthetic

Modules: prompts (templates), parse (SCDG output -> records + reject reasons), backends (hf, vllm,
openai behind one interface), cache (one file per generated row), run (the Ray Data pipeline),
explanations / synthetic (the two tasks), outputs (Parquet files; the manifest is tkre.store.manifest's).
"""

from tkre.generate.explanations import generate_explanations
from tkre.generate.outputs import read_explanations, read_rejects, read_synthetic
from tkre.generate.synthetic import generate_synthetic

__all__ = ["generate_explanations", "generate_synthetic", "read_explanations", "read_rejects", "read_synthetic"]

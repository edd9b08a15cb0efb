"""Benchmark: Ray Data hf backend vs a plain sequential transformers loop, and cache-hit speed-up.

Same prompts (EDKG prompts of the SemEval 8-shot split), same embedded SmolLM2, greedy, same number
of new tokens, measured side by side in one run:

1. sequential: one prompt at a time, `model.generate` in this process (model loaded before timing);
2. Ray Data: `tkre.generate.run.generate_rows` -- actor pool, left-padded batches, fresh cache
   (timed end to end, including the actor's model load);
3. cache: the same rows again, all served from the cache;
4. llama.cpp (when `llama_cpp` imports: `pip install llama-cpp-python`, built from source): the same
   prompts, one at a time, through its chat completion on the embedded GGUF itself (Q4_1, the file the
   hf path converts), greedy, the same threads and token cap (model loaded before timing).

    python benchmarks/generation.py [--prompts 48] [--max-new-tokens 48] [--batch-size 16] [--threads N]

Last stdout line: JSON with speedup_vs_sequential, cache_speedup (aims: >= 3 and >= 100) and, with
llama.cpp installed, ratio_vs_llama_cpp (the engine path's tokens/s over llama.cpp's; aim >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sequential(model_dir: str, prompts: list[str], max_new_tokens: int, threads: int) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return tokens, time.perf_counter() - start


def llama_cpp(gguf: str, prompts: list[str], max_new_tokens: int, threads: int) -> tuple[int, float] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": p}], max_tokens=max_new_tokens,
                                         temperature=0.0, top_k=1)
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads, both sides (default: all cores)")
    args = ap.parse_args()

    from tkre.config import GeneratorConfig, SamplingConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.generate.backends import backend_spec
    from tkre.generate.cache import GenerationCache
    from tkre.generate.prompts import edkg_prompt
    from tkre.generate.run import generate_rows, make_row
    from tkre.cluster.runtime import init_ray

    golden = sample_kshot(load_dataset("semeval"), 8, 1).train[:args.prompts]
    prompts = [edkg_prompt(ex) for ex in golden]
    threads = args.threads or os.cpu_count() or 1
    cfg = GeneratorConfig(batch_size=args.batch_size, concurrency=1, threads_per_actor=threads,
                          sampling=SamplingConfig(temperature=0.0))
    decoding = cfg.sampling.decoding(args.max_new_tokens)
    spec = backend_spec(cfg)  # converts the embedded GGUF once (cached in ~/.cache/tkre/model_sources)
    model_dir = spec.init_kwargs["model"]

    seq_tokens, seq_s = sequential(model_dir, prompts, args.max_new_tokens, threads)
    print(f"sequential transformers loop: {seq_tokens} tokens in {seq_s:.1f} s = {seq_tokens / seq_s:.1f} tok/s")

    init_ray()
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = GenerationCache(cache_dir)
        rows = [make_row(spec, decoding, p, 0) for p in prompts]
        _, ray_stats = generate_rows(rows, spec, cfg, decoding, cache, desc="ray data")
        ray_s = ray_stats.seconds
        print(f"Ray Data hf backend (batch {args.batch_size}, incl. actor start + model load): "
              f"{ray_stats.tokens} tokens in {ray_s:.1f} s = {ray_stats.tokens / ray_s:.1f} tok/s, "
              f"errors {ray_stats.errors}")
        t0 = time.perf_counter()
        results, hit_stats = generate_rows(rows, spec, cfg, decoding, cache, desc="cached")
        cache_s = time.perf_counter() - t0
        assert hit_stats.cache_hits == len(rows) and hit_stats.generated == 0
        print(f"cache hits: {len(rows)} rows in {cache_s * 1000:.1f} ms")

    from tkre.config import EMBEDDED_GENERATOR
    from tkre.model_sources import embedded_file

    lc = llama_cpp(str(embedded_file(EMBEDDED_GENERATOR)), prompts, args.max_new_tokens, threads)
    if lc is None:
        print("llama.cpp: llama_cpp not installed (pip install llama-cpp-python); ratio_vs_llama_cpp not measured")
    else:
        print(f"llama.cpp (same GGUF, sequential): {lc[0]} tokens in {lc[1]:.1f} s = {lc[0] / lc[1]:.1f} tok/s")
    seq_tps, ray_tps = seq_tokens / seq_s, ray_stats.tokens / ray_s
    result = {
        "benchmark": "generation", "model": "embedded:smollm2", "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "threads": threads,
        "sequential_tokens": int(seq_tokens), "sequential_s": round(seq_s, 2), "sequential_tokens_per_s": round(seq_tps, 2),
        "ray_tokens": ray_stats.tokens, "ray_s": round(ray_s, 2), "ray_tokens_per_s": round(ray_tps, 2),
        "cache_s": round(cache_s, 4),
        "speedup_vs_sequential": round(ray_tps / seq_tps, 2),
        "cache_speedup": round(ray_s / max(cache_s, 1e-9), 1),
    }
    if lc is not None:
        result.update({"llama_cpp_tokens": lc[0], "llama_cpp_s": round(lc[1], 2),
                       "llama_cpp_tokens_per_s": round(lc[0] / lc[1], 2),
                       "ratio_vs_llama_cpp": round(ray_tps / (lc[0] / lc[1]), 3)})
    print(f"speed-up vs sequential: {result['speedup_vs_sequential']}x; cache speed-up: {result['cache_speedup']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark: SCDG acceptance and throughput, constrained decoding vs the paper's free text + regex.

SemEval 8-shot (knowprompt seed 1), the embedded SmolLM2-135M, the SCDG defaults (scdg.* of
tkre/config/) and the same sampling settings in both runs; the only difference is `scdg.constrained`
(the prompt then shows the golden samples in the schema's JSON instead of the labelled-lines format).
Both runs go through the real pipeline (`generate_synthetic`: Ray Data actor pool, rounds, validator)
with fresh caches, one after the other in this process:

    python benchmarks/scdg_acceptance.py [--relations N] [--max-rounds R] [--samples-per-prompt S]

Prints a line per run, then, as the last line, one JSON object:
  acceptance_free, acceptance_constrained   kept / asked over all relations
  relations_with_kept_min                    fewest samples kept for any relation (constrained run)
  tokens_per_s_free, tokens_per_s_constrained  generated tokens / generation seconds (Ray pool included)
Aims (issue 15): acceptance_constrained >= 0.5, constrained tokens/s >= 0.8 x free, every relation >= 1 kept.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(constrained: bool, args, golden, relations, type_pairs, root: str) -> dict:
    from tkre.config import GeneratorConfig, SCDGConfig
    from tkre.generate import generate_synthetic

    gen = GeneratorConfig(cache_dir=os.path.join(root, "cache"))  # fresh cache per run: nothing served from it
    updates = {k: v for k, v in {"max_rounds": args.max_rounds, "samples_per_prompt": args.samples_per_prompt,
                                 "prompt_examples": args.prompt_examples}.items() if v is not None}
    cfg = SCDGConfig(generator=gen, constrained=constrained, samples_per_relation=args.k, **updates)
    t0 = time.perf_counter()
    m = generate_synthetic(golden, type_pairs, cfg, os.path.join(root, "out"), relations=relations)
    wall = time.perf_counter() - t0
    kept = {r: a["kept"] for r, a in m["acceptance"].items()}
    asked = sum(a["asked"] for a in m["acceptance"].values())
    gen_s = float(m["run"]["seconds"])
    out = {"mode": "constrained" if constrained else "free", "asked": asked, "kept": sum(kept.values()),
           "acceptance": round(sum(kept.values()) / asked, 4) if asked else 0.0,
           "kept_min": min(kept.values()) if kept else 0, "rounds": m["rounds"], "prompts": m["counts"]["prompts"],
           "samples": m["counts"]["samples"], "tokens": m["tokens"], "generation_s": round(gen_s, 1),
           "tokens_per_s": round(m["tokens"] / gen_s, 2) if gen_s else 0.0, "wall_s": round(wall, 1),
           "unconstrained": m["counts"].get("unconstrained", 0), "reasons": m["reasons"],
           "samples_per_prompt": m["samples_per_prompt"], "max_new_tokens": m["sampling"]["max_new_tokens"]}
    print(f"SCDG_RUN {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relations", type=int, default=None, help="only the first N relations (small trial runs)")
    ap.add_argument("--k", type=int, default=8, help="K of the K-shot split = samples asked per relation")
    ap.add_argument("--max-rounds", type=int, default=None, help="override scdg.max_rounds")
    ap.add_argument("--samples-per-prompt", type=int, default=None, help="override scdg.samples_per_prompt")
    ap.add_argument("--prompt-examples", type=int, default=None, help="override scdg.prompt_examples")
    args = ap.parse_args()

    from tkre.data import load_dataset, relation_type_schema, sample_kshot
    from tkre.cluster.runtime import init_ray

    golden = sample_kshot(load_dataset("semeval"), args.k, 1).train
    relations = sorted({ex.relation for ex in golden})[: args.relations] if args.relations else None
    type_pairs = relation_type_schema(golden)
    init_ray()
    results = {}
    for constrained in (True, False):  # the aim first: its figures are read before the baseline's
        with tempfile.TemporaryDirectory(prefix="tkre-scdg-bench-") as root:
            results[constrained] = run(constrained, args, golden, relations, type_pairs, root)
    free, con = results[False], results[True]
    print(json.dumps({
        "acceptance_free": free["acceptance"], "acceptance_constrained": con["acceptance"],
        "relations_with_kept_min": con["kept_min"], "relations_with_kept_min_free": free["kept_min"],
        "tokens_per_s_free": free["tokens_per_s"], "tokens_per_s_constrained": con["tokens_per_s"],
        "tokens_per_s_ratio": round(con["tokens_per_s"] / free["tokens_per_s"], 3) if free["tokens_per_s"] else None,
        "asked": con["asked"], "rounds_free": free["rounds"], "rounds_constrained": con["rounds"],
    }))


if __name__ == "__main__":
    main()

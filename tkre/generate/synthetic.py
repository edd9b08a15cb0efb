"""SCDG: synthetic samples per relation, generated in rounds until each relation has `per_relation`.

As in the paper (and the reference code UESTC-GQJ/TKRE, which asks again until every relation has
its samples), generation goes on in rounds until every relation has its target or `max_rounds` is
reached. Round t asks, only for the relations still short of samples, ceil(missing /
samples_per_prompt) prompts of `samples_per_prompt` new samples each, with a new-token budget sized
for that many samples (`SCDGConfig.new_tokens`); each prompt shows `prompt_examples` golden samples,
rotated so that successive prompts show different ones (and, from a relation's second prompt on, in
a shuffled order: `shown_examples`), and every prompt has its own sample index
(its own cache key and seed). Completions are validated in a fixed order (relation, prompt), so the
output does not depend on which actor finished first; valid samples beyond `per_relation` are kept
in the rejects table as `surplus`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tkre import __version__
from tkre.config import SCDGConfig
from tkre.data.records import RelationExample
from tkre.generate import parse, validate
from tkre.generate.backends import backend_spec
from tkre.generate.cache import GenerationCache
from tkre.generate.engines import EnginePool
from tkre.generate.outputs import REJECTS_FILE, SYNTHETIC_FILE, write_synthetic
from tkre.generate.prompts import scdg_prompt
from tkre.generate.quality import scdg_quality
from tkre.generate.run import ERROR_CHARS, RunStats, check_error_budget, generate_rows, make_row
from tkre.generate.schema import schema_json, scdg_schema
from tkre.io import stable_hash

log = logging.getLogger(__name__)


def shown_examples(examples: list[RelationExample], relation: str, prompt_index: int,
                   count: int) -> list[RelationExample]:
    """The golden samples prompt `prompt_index` of `relation` shows: `count` of them, rotated so that
    successive prompts start further on; from the second prompt on, in an order shuffled with a seed
    of (relation, prompt index). When a prompt shows all K golden samples, rotation alone repeats
    the first prompt's set, and a near-greedy model (temperature 0.1) then writes the same samples
    again: in the benchmark's first constrained run, 123 of 432 samples were copies of an earlier one."""
    n = len(examples)
    shown = [examples[(prompt_index * count + i) % n] for i in range(min(count, n))]
    if prompt_index:
        random.Random(stable_hash([relation, prompt_index])).shuffle(shown)
    return shown


def generate_synthetic(golden: list[RelationExample], type_pairs: dict[str, list[list[str]]], cfg: SCDGConfig,
                       out_dir: str | Path, *, relations: list[str] | None = None) -> dict[str, Any]:
    """Write out_dir/synthetic.parquet and rejects.parquet; return the summary (the artifact store's
    manifest keeps it). `cfg` names its generator and samples_per_relation (an ExperimentConfig's
    section has both filled in)."""
    start = time.perf_counter()
    per_relation = cfg.samples_per_relation
    out = Path(out_dir)
    gen = cfg.generator
    spec = backend_spec(gen)
    sampling = gen.sampling.decoding(cfg.new_tokens)
    cache = GenerationCache(gen.cache_dir)
    by_rel: dict[str, list[RelationExample]] = defaultdict(list)
    for ex in golden:
        by_rel[ex.relation].append(ex)
    relations = list(relations) if relations is not None else list(by_rel)
    no_examples = [r for r in relations if not by_rel.get(r)]
    relations = [r for r in relations if by_rel.get(r)]
    validator = validate.SampleValidator(golden, type_pairs, source=f"synthetic:{spec.generator}")
    spp = cfg.samples_per_prompt
    constrained = cfg.constrained
    schemas = {r: schema_json(scdg_schema(r, spp, type_pairs.get(r) if validator.uses_types else None))
               for r in relations} if constrained else {}
    unconstrained_rows = 0  # constrained rows a backend could only answer as free text (reported)
    dialects: Counter = Counter()  # constrained rows answered, by how the schema reached the server (openai)

    kept: dict[str, list[RelationExample]] = {r: [] for r in relations}
    rejects: list[dict[str, Any]] = []
    per_rel: dict[str, Counter] = {r: Counter() for r in relations}
    prompts_used: Counter = Counter()
    stats = RunStats()
    rounds = 0
    with EnginePool() as engines:  # one model load per engine for all rounds, not one per round
        for rnd in range(cfg.max_rounds):
            need = {r: per_relation - len(kept[r]) for r in relations if len(kept[r]) < per_relation}
            if not need:
                break
            rounds += 1
            rows = []
            for r, missing in need.items():
                for _ in range(math.ceil(missing / spp)):
                    g = prompts_used[r]
                    prompts_used[r] += 1
                    shown = shown_examples(by_rel[r], r, g, cfg.prompt_examples)
                    prompt = scdg_prompt(r, shown, spp, cfg.prompt, cfg.example_prompt, constrained=constrained,
                                         typed=validator.uses_types)
                    rows += [make_row(spec, sampling, prompt, g * sampling.n + j, schema=schemas.get(r), relation=r)
                             for j in range(sampling.n)]
            results, round_stats = generate_rows(rows, spec, gen, sampling, cache,
                                                 desc=f"SCDG round {rnd + 1}", engines=engines)
            stats.merge(round_stats)
            for row in rows:
                r, res = row["relation"], results[row["key"]]
                if res["error"] is not None:
                    outcomes = [parse.Outcome(r, "", None, parse.GENERATION_ERROR, res["error"][:ERROR_CHARS])]
                else:
                    if constrained and not res.get("constrained"):
                        unconstrained_rows += 1
                    if constrained and res.get("dialect"):
                        dialects[res["dialect"]] += 1
                    outcomes = validator.validate_completion(res["text"], r, json_format=constrained)
                for o in outcomes:
                    if o.example is not None and len(kept[r]) < per_relation:
                        kept[r].append(o.example)
                        per_rel[r]["accepted"] += 1
                        continue
                    reason = parse.SURPLUS if o.example is not None else o.reason
                    if o.example is not None:
                        per_rel[r]["accepted"] += 1
                    per_rel[r][reason] += 1
                    rejects.append({"relation": r, "reason": reason, "detail": o.detail, "raw": o.raw,
                                    "round": rnd + 1})

    short = {r: len(kept[r]) for r in relations if len(kept[r]) < per_relation}
    if short:
        log.warning("SCDG: %d relation(s) still short of %d samples after %d round(s): %s", len(short), per_relation,
                    rounds, ", ".join(f"{r} ({n})" for r, n in short.items()))
    if unconstrained_rows:
        log.warning("SCDG: %d of %d constrained prompts were answered without the schema (the backend or "
                    "server does not support structured outputs); their text went through the free-text "
                    "parser as well", unconstrained_rows, stats.rows)
    examples = [ex for r in relations for ex in kept[r]]
    write_synthetic(examples, rejects, out)
    reasons = Counter(rej["reason"] for rej in rejects)
    acceptance = {}
    for r in relations:
        c = per_rel[r]
        samples = c["accepted"] + sum(v for k, v in c.items() if k not in ("accepted", parse.SURPLUS))
        acceptance[r] = {"asked": per_relation, "kept": len(kept[r]), "valid": c["accepted"], "samples": samples,
                         "rate": round(c["accepted"] / samples, 4) if samples else 0.0,
                         "reasons": {k: v for k, v in sorted(c.items()) if k not in ("accepted",)}}
    total_samples = sum(a["samples"] for a in acceptance.values())
    total_valid = sum(a["valid"] for a in acceptance.values())
    manifest = {
        "kind": "synthetic", "tkre_version": __version__, "generator": spec.generator, "backend": spec.name,
        "model": spec.model_id, "revision": spec.revision, "file": SYNTHETIC_FILE, "rejects_file": REJECTS_FILE,
        "per_relation": per_relation, "rounds": rounds, "max_rounds": cfg.max_rounds,
        "engines_started": engines.started,
        "type_check": validator.uses_types, "relations_without_examples": no_examples, "relations_short": short,
        "constrained": constrained,
        "counts": {"relations": len(relations), "prompts": stats.rows, "samples": total_samples,
                   "valid": total_valid, "kept": len(examples), "rejected": len(rejects),
                   "errors": reasons.get(parse.GENERATION_ERROR, 0), "cache_hits": stats.cache_hits,
                   "generated": stats.generated, "unconstrained": unconstrained_rows,
                   "dialects": dict(sorted(dialects.items()))},
        "structured_output": stats.structured,
        "acceptance_rate": round(total_valid / total_samples, 4) if total_samples else 0.0,
        "acceptance": acceptance, "reasons": dict(sorted(reasons.items())),
        "tokens": stats.tokens, "seconds": round(time.perf_counter() - start, 3),
        "tokens_per_s": round(stats.tokens_per_s, 2), "run": stats.as_dict(),
        "sampling": sampling.model_dump(), "samples_per_prompt": spp, "cache_dir": str(cache.root),
        "quality": scdg_quality([ex.text for ex in examples], [ex.text for ex in golden]),
    }
    check_error_budget(stats, gen.max_error_fraction, "SCDG synthetic samples", summary=manifest)
    return manifest

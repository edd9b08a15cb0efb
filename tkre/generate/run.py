"""The generation pipeline on Ray: prompts -> cache look-up -> engine actors -> cache -> results.

1. Every row (one prompt, one sample index) gets a cache key (tkre.generate.cache.row_key); rows
   already in the cache are served from it, nothing else is recomputed (ray#55008: an interrupted
   batch job would otherwise restart from zero).
2. The missing rows go out in batches to the job's engine actors (tkre/generate/engines.py: one model
   load per actor for the whole job, SCDG's rounds included, not one per batch or per round). Each
   actor returns a result per row -- text and token count, or an error string -- so one bad row never
   fails its batch (ray#59194).
3. The driver streams the results, writes each successful row to the cache as it arrives (a run
   killed half-way keeps every row that reached the driver) and shows a progress bar with rows and
   tokens/s. Errors are returned, counted and retried on the next run; they are never cached.

Before the first constrained row (one with a schema) goes out, the backend spec is `prepared` once in
the driver (the openai backend finds the structured-output dialect its server speaks); what was found
is `RunStats.structured`, and each row carries the dialect it was answered in (cached with it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from tkre import progress
from tkre.config import DecodingConfig, GeneratorConfig
from tkre.errors import GenerationError, one_line
from tkre.generate.backends import BackendSpec
from tkre.generate.cache import GenerationCache, row_key
from tkre.generate.engines import EnginePool, batches_of
from tkre.generate.schema import schema_id
from tkre.cluster.runtime import init_ray

log = logging.getLogger(__name__)

#: characters of an error kept (a server's own message is kept whole up to this)
ERROR_CHARS = 1000


@dataclass
class RunStats:
    rows: int = 0
    cache_hits: int = 0
    generated: int = 0
    errors: int = 0
    tokens: int = 0  # generated in this run (cache hits excluded)
    seconds: float = 0.0
    input_tokens: int = 0  # prompt tokens of every row, cache hits included (what the data set cost)
    output_tokens: int = 0  # generated tokens of every row, cache hits included
    error_samples: list[str] = field(default_factory=list)
    corrupt_cache_entries: int = 0  # unreadable cache entries found and regenerated (each logged)
    from_other_runs: int = 0  # rows another run on the same cache generated while this one waited
    structured: dict | None = None  # what the backend found out before constrained rows (openai: the dialect)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: "RunStats") -> None:
        for name in ("rows", "cache_hits", "generated", "errors", "tokens", "seconds", "input_tokens",
                     "output_tokens", "corrupt_cache_entries", "from_other_runs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.error_samples = (self.error_samples + other.error_samples)[:5]
        self.structured = self.structured if other.structured is None else other.structured

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "cache_hits": self.cache_hits, "generated": self.generated,
                "errors": self.errors, "tokens": self.tokens, "seconds": round(self.seconds, 3),
                "tokens_per_s": round(self.tokens_per_s, 2), "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "error_samples": self.error_samples,
                "corrupt_cache_entries": self.corrupt_cache_entries, "from_other_runs": self.from_other_runs,
                **({"structured": self.structured} if self.structured is not None else {})}


def check_error_budget(stats: RunStats, max_fraction: float, what: str, *, summary: dict | None = None) -> None:
    """Raise GenerationError (carrying the stage's `summary`) when every row failed, or more than
    `max_fraction` of them did: one line with the counts and the first reason (the successful rows are
    cached: a rerun asks only for the rest)."""
    if stats.errors == 0 or stats.rows == 0:
        return
    if stats.errors < stats.rows and stats.errors / stats.rows <= max_fraction:
        log.warning("%s: %d/%d rows failed (tolerated: max_error_fraction=%g); first error: %s", what,
                    stats.errors, stats.rows, max_fraction,
                    one_line(stats.error_samples[0] if stats.error_samples else "", ERROR_CHARS))
        return
    first = one_line(stats.error_samples[0], ERROR_CHARS) if stats.error_samples else "unknown"
    raise GenerationError(
        f"{what}: {stats.errors}/{stats.rows} rows failed (cache hits {stats.cache_hits}, generated "
        f"{stats.generated}, errors {stats.errors}; max_error_fraction={max_fraction:g}); first error: {first}. "
        f"Successful rows are cached: fix the cause and rerun", summary=summary)


def make_row(spec: BackendSpec, sampling: DecodingConfig, prompt: str, sample_index: int, *,
             schema: str | None = None, **meta: Any) -> dict:
    """One generation row: its cache key, prompt, a seed derived from the key, and the JSON schema the
    output must follow ("" = free text; constrained and free rows never share a cache key)."""
    key = row_key(backend=spec.name, model=spec.model_id, revision=spec.revision, prompt=prompt,
                  sampling=sampling.key(), sample_index=sample_index, schema=schema_id(schema))
    return {"key": key, "prompt": prompt, "seed": (sampling.seed + int(key[:7], 16)) % (2 ** 31),
            "schema": schema or "", **meta}


def generate_rows(rows: list[dict], spec: BackendSpec, cfg: GeneratorConfig, sampling: DecodingConfig,
                  cache: GenerationCache, *, desc: str = "generating",
                  engines: EnginePool | None = None) -> tuple[dict[str, dict], RunStats]:
    """Complete every row (dicts with key, prompt, seed). Returns key -> {text, tokens, error, cached}.

    `engines`: the job's engine pool (tkre/generate/engines.py), kept by the caller across calls (SCDG's
    rounds); None: a pool for this call only. Rows another live run on the same cache has claimed are
    waited for, not computed twice; rows it left unfinished (its errors, or it died) are claimed and
    computed here afterwards."""
    if engines is None:
        with EnginePool() as own:
            return generate_rows(rows, spec, cfg, sampling, cache, desc=desc, engines=own)
    stats = RunStats()
    start = time.perf_counter()
    corrupt_before = cache.corrupt
    results: dict[str, dict] = {}
    todo: dict[str, dict] = {}
    for row in rows:
        key = row["key"]
        if key in results or key in todo:
            continue
        hit = cache.get(key)
        if hit is not None:
            _take_hit(results, key, hit, stats)
        else:
            todo[key] = {"key": key, "prompt": row["prompt"], "seed": int(row["seed"]),
                         "schema": row.get("schema") or ""}
    stats.rows = len(results) + len(todo)
    stats.cache_hits = len(results)
    if any(r["schema"] for r in todo.values()):
        spec, stats.structured = spec.prepared()
    while todo:
        with cache.claim(todo) as taken:
            mine = [r for k, r in todo.items() if k not in taken]
            if mine:  # similar lengths in one batch -> little left padding wasted
                _run_ray(sorted(mine, key=lambda r: (len(r["prompt"]), r["key"])), spec, engines, sampling, cache,
                         results, stats, desc)
            if taken:
                log.info("%s: %d row(s) are being generated by another run on this cache: waiting for them",
                         desc, len(taken))
                _await_other_runs(cache, taken, results, stats)
        todo = {k: r for k, r in todo.items() if k not in results}
    stats.corrupt_cache_entries = cache.corrupt - corrupt_before
    stats.seconds = time.perf_counter() - start
    return results, stats


def _take_hit(results: dict, key: str, hit: dict, stats: RunStats) -> None:
    """A row served from the cache (its tokens count towards what the data set cost)."""
    results[key] = {"text": hit["text"], "tokens": int(hit.get("tokens", 0)), "error": None, "cached": True,
                    "input_tokens": int(hit.get("input_tokens", 0)), "constrained": bool(hit.get("constrained", False)),
                    "dialect": str(hit.get("dialect") or "")}
    stats.input_tokens += results[key]["input_tokens"]
    stats.output_tokens += results[key]["tokens"]


def _await_other_runs(cache: GenerationCache, keys: set[str], results: dict, stats: RunStats,
                      poll_s: float = 1.0) -> None:
    """Collect rows other runs are generating as their entries appear; return when all are in or no
    live run claims the rest any more (those the caller then computes itself)."""
    waiting = set(keys)
    while waiting:
        for key in sorted(waiting):
            hit = cache.get(key)
            if hit is not None:
                _take_hit(results, key, hit, stats)
                stats.cache_hits += 1
                stats.from_other_runs += 1
                waiting.discard(key)
        if not waiting or not waiting & cache.claimed_by_others():
            return
        time.sleep(poll_s)


def _results(todo: list[dict], spec: BackendSpec, engines: EnginePool, sampling: DecodingConfig) -> Iterator[dict]:
    """One dict per completed row, as the engines finish their batches."""
    init_ray()
    for batch in engines.run(spec, batches_of(todo, spec.batch_size), sampling):
        for i in range(len(batch["key"])):
            yield {c: batch[c][i] for c in batch}


def _run_ray(todo, spec, engines, sampling, cache, results, stats, desc) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[tps]:.1f} tok/s"), transient=True) as bar:
        task = bar.add_task(desc, total=len(todo), tps=0.0)
        for row in _results(todo, spec, engines, sampling):
            key = str(row["key"])
            error = row.get("error") or None
            if error:
                stats.errors += 1
                if len(stats.error_samples) < 5:
                    stats.error_samples.append(str(error)[:ERROR_CHARS])
                results[key] = {"text": None, "tokens": 0, "error": str(error), "cached": False, "constrained": False,
                                "dialect": ""}
            else:
                text, tokens = str(row.get("text") or ""), int(row.get("tokens") or 0)
                read = int(row.get("input_tokens") or 0)
                constrained, dialect = bool(row.get("constrained")), str(row.get("dialect") or "")
                cache.put(key, {"text": text, "tokens": tokens, "input_tokens": read, "backend": spec.name,
                                "model": spec.model_id, "constrained": constrained,
                                **({"dialect": dialect} if dialect else {})})
                stats.generated += 1
                stats.tokens += tokens
                stats.input_tokens += read
                stats.output_tokens += tokens
                results[key] = {"text": text, "tokens": tokens, "error": None, "cached": False, "input_tokens": read,
                                "constrained": constrained, "dialect": dialect}
            elapsed = time.perf_counter() - t0
            bar.update(task, advance=1, tps=stats.tokens / elapsed if elapsed > 0 else 0.0)
            done = stats.generated + stats.errors
            progress.emit(every_s=0 if done == len(todo) else 2.0, unit="rows", done=done, total=len(todo))
    missing = [r["key"] for r in todo if r["key"] not in results]
    for key in missing:  # should not happen; never silently drop a row
        stats.errors += 1
        results[key] = {"text": None, "tokens": 0, "error": "row missing from the pipeline output", "cached": False,
                        "constrained": False, "dialect": ""}
    log.info("%s: %d generated, %d errors, %d tokens, %.1f tok/s", desc, stats.generated, stats.errors,
             stats.tokens, stats.tokens / max(time.perf_counter() - t0, 1e-9))

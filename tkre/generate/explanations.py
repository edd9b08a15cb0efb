"""EDKG: one explanation per golden example (x sampling.n), through the cached Ray Data pipeline."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tkre import __version__
from tkre.config import GenerationConfig
from tkre.data.records import RelationExample
from tkre.generate.backends import backend_spec
from tkre.generate.cache import GenerationCache
from tkre.generate.outputs import EXPLANATIONS_FILE, write_explanations, write_manifest
from tkre.generate.prompts import edkg_prompt
from tkre.generate.run import generate_rows, make_row

log = logging.getLogger(__name__)


def generate_explanations(golden: list[RelationExample], cfg: GenerationConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write out_dir/explanations.parquet + manifest.json; return the manifest.

    Rows whose generation failed or came back empty are counted in the manifest, not written;
    re-running retries them (successful rows come from the cache)."""
    start = time.perf_counter()
    out = Path(out_dir)
    spec = backend_spec(cfg)
    sampling = cfg.sampling.model_copy(update={"max_new_tokens": cfg.explanation_max_new_tokens})
    cache = GenerationCache(cfg.cache_dir)
    rows = [make_row(spec, sampling, edkg_prompt(ex, cfg.prompts), j, example=i)
            for i, ex in enumerate(golden) for j in range(sampling.n)]
    results, stats = generate_rows(rows, spec, cfg, sampling, cache, desc="EDKG explanations")
    written, empty = [], 0
    for row in rows:
        res = results[row["key"]]
        if res["error"] is not None:
            continue
        text = res["text"].strip()
        if not text:
            empty += 1
            continue
        ex = golden[row["example"]]
        written.append({"relation": ex.relation, "subject": ex.subject, "object": ex.object, "source_id": ex.id,
                        "text": ex.text, "explanation": text, "generator": spec.generator})
    write_explanations(written, out)
    row_errors = sum(1 for row in rows if results[row["key"]]["error"] is not None)
    manifest = {
        "kind": "explanations", "tkre_version": __version__, "generator": spec.generator, "backend": spec.name,
        "model": spec.model_id, "revision": spec.revision, "file": EXPLANATIONS_FILE,
        "counts": {"golden": len(golden), "prompts": len(rows), "written": len(written), "empty": empty,
                   "errors": row_errors, "cache_hits": stats.cache_hits, "generated": stats.generated},
        "tokens": stats.tokens, "seconds": round(time.perf_counter() - start, 3),
        "tokens_per_s": round(stats.tokens_per_s, 2), "run": stats.as_dict(),
        "sampling": sampling.model_dump(), "cache_dir": str(cache.root),
    }
    write_manifest(manifest, out)
    return manifest

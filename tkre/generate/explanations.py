"""EDKG: one explanation per golden example (x sampling.n), through the cached Ray Data pipeline.

Chat models often open with a preamble ("Sure! Here is an explanation of ...:"); the reference code
(UESTC-GQJ/TKRE) drops the response's first two lines for it. `strip_preamble` drops such an opening
line only when it is one (so a model that answers straight away keeps its first sentence). The cache
keeps the raw completion; stripping happens when the corpus is written.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from tkre import __version__
from tkre.config import EDKGConfig
from tkre.data.records import RelationExample
from tkre.generate.backends import backend_spec
from tkre.generate.cache import GenerationCache
from tkre.generate.outputs import EXPLANATIONS_FILE, write_explanations
from tkre.generate.prompts import edkg_prompt
from tkre.generate.quality import explanation_quality
from tkre.generate.run import check_error_budget, generate_rows, make_row

log = logging.getLogger(__name__)

# How a chat preamble opens, and what marks its end.
_OPENER = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|great|here(?:'s| is| are)|below is"
                     r"|i'd be (?:happy|glad)|i would be (?:happy|glad)|happy to)\b", re.IGNORECASE)
_INTERJECTION = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|great)\s*[!.,]\s*", re.IGNORECASE)
_ANNOUNCES = re.compile(r"\b(?:here(?:'s| is| are)|below is|happy to|glad to|explanation)\b", re.IGNORECASE)


def strip_preamble(text: str) -> str:
    """The explanation without a chat preamble ("Sure! Here is an explanation of why ...:").

    Drops, when the text opens with a preamble word: everything up to a colon on the first line;
    else a first line that only announces the answer (or is a bare "Sure!"); else a leading
    interjection ("Sure! The subject ..." -> "The subject ..."). Never returns an empty text."""
    text = text.strip()
    if not _OPENER.match(text):
        return text
    first, _, rest = text.partition("\n")
    if ":" in first:
        out = text[text.index(":") + 1:]
    elif rest.strip() and (len(first.split()) <= 3 or _ANNOUNCES.search(first)):
        out = rest
    else:
        out = _INTERJECTION.sub("", text, count=1)
    return out.strip() or text


def generate_explanations(golden: list[RelationExample], cfg: EDKGConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write out_dir/explanations.parquet; return the summary (the artifact store's manifest keeps it).

    Rows whose generation failed or came back empty are counted in the manifest, not written;
    re-running retries them (successful rows come from the cache)."""
    start = time.perf_counter()
    out = Path(out_dir)
    gen = cfg.generator
    spec = backend_spec(gen)
    sampling = gen.sampling.decoding(cfg.max_new_tokens)
    cache = GenerationCache(gen.cache_dir)
    rows = [make_row(spec, sampling, edkg_prompt(ex, cfg.prompt), j, example=i)
            for i, ex in enumerate(golden) for j in range(sampling.n)]
    results, stats = generate_rows(rows, spec, gen, sampling, cache, desc="EDKG explanations")
    written, empty = [], 0
    for row in rows:
        res = results[row["key"]]
        if res["error"] is not None:
            continue
        text = strip_preamble(res["text"])
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
        "quality": explanation_quality([w["explanation"] for w in written]),
    }
    check_error_budget(stats, gen.max_error_fraction, "EDKG explanations", summary=manifest)
    return manifest

"""A generation stage's summary -> the flat statistics its results row carries (`edkg.*`, `scdg.*`).

The report (tkre/report/generators.py) compares generator settings from these columns only. Cost is
computed here, from the summary's token counts and the generator's prices at the time of the run
(prices are not part of an artifact's key, so a reused artifact is priced with today's prices).
Nested counts (per relation, per reason) travel as JSON strings, which a Parquet table keeps as is.
"""

from __future__ import annotations

import json
from typing import Any

from tkre.generate.quality import cost_usd, parsed_samples, prices_for


def _usage(summary: dict[str, Any]) -> tuple[int, int, int, float]:
    """(input tokens, output tokens of every row incl. cached, output tokens generated now, their seconds)."""
    run = summary.get("run") or {}
    fresh = int(run.get("tokens", summary.get("tokens", 0)) or 0)
    out = int(run.get("output_tokens", fresh) or 0)
    return int(run.get("input_tokens", 0) or 0), out, fresh, float(run.get("seconds", 0.0) or 0.0)


def role_stats(role: str, summary: dict[str, Any], *, backend: str, base_url: str | None,
               price_in: float | None, price_out: float | None) -> dict[str, Any]:
    """The `edkg`/`scdg` statistics of one stage summary (a generation artifact's manifest)."""
    input_tokens, output_tokens, fresh, gen_seconds = _usage(summary)
    prices = prices_for(backend, base_url, price_in, price_out)
    counts = summary.get("counts") or {}
    quality = summary.get("quality") or {}
    out: dict[str, Any] = {
        "generator": summary.get("generator"), "prompts": int(counts.get("prompts", 0)),
        "input_tokens": input_tokens, "output_tokens": output_tokens, "fresh_output_tokens": fresh,
        "generation_seconds": round(gen_seconds, 3), "seconds": float(summary.get("seconds", 0.0) or 0.0),
        "tokens_per_s": round(fresh / gen_seconds, 2) if gen_seconds > 0 else None,
        "cost_usd": cost_usd(input_tokens, output_tokens, prices), "price_known": prices is not None,
        "cache_hits": int(counts.get("cache_hits", 0)), "errors": int(counts.get("errors", 0)),
        "distinct_2": quality.get("distinct_2"),
    }
    if role == "edkg":
        out.update({"explanations": int(counts.get("written", 0)),
                    "explanation_words_mean": quality.get("explanation_words_mean")})
        return out
    reasons = summary.get("reasons") or {}
    per_relation = summary.get("acceptance") or {}
    asked = sum(int(a.get("asked", 0)) for a in per_relation.values())
    samples = int(counts.get("samples", 0))
    out.update({
        "asked": asked, "samples": samples, "parsed": parsed_samples(samples, reasons),
        "valid": int(counts.get("valid", 0)), "kept": int(counts.get("kept", 0)),
        "acceptance": round(int(counts.get("kept", 0)) / asked, 4) if asked else None,
        "golden_overlap_mean": quality.get("golden_overlap_mean"),
        "golden_overlap_max": quality.get("golden_overlap_max"),
        "constrained": bool(summary.get("constrained", False)),
        "unconstrained": int(counts.get("unconstrained", 0) or 0),
        "dialects_json": json.dumps(counts.get("dialects") or {}, sort_keys=True),
        "reasons_json": json.dumps(reasons, sort_keys=True),
        "acceptance_json": json.dumps({r: {"asked": int(a.get("asked", 0)), "kept": int(a.get("kept", 0))}
                                       for r, a in sorted(per_relation.items())}),
    })
    return out

"""Decoding for the hf backend: per-row seeded sampling and the decode-time schema mask (llguidance).

Two transformers `LogitsProcessor`s, run inside `model.generate` on a left-padded batch:

- `SchemaMask`: one llguidance `LLMatcher` per row compiles the row's JSON schema (tkre/generate/schema.py)
  and, at every step, lets through only the tokens that keep the output a valid prefix of the schema;
  once the JSON is complete only EOS remains. Why llguidance (and not xgrammar, outlines or
  lm-format-enforcer): one 3 MB wheel with no dependencies, a Rust mask computation that costs far
  less than a forward pass even on CPU, and one of the structured-output backends vLLM itself ships
  (`structured_outputs_config={"backend": "guidance"}`); xgrammar's wheel pulls `triton` (273 MB,
  unused on CPU), outlines pulls four packages, lm-format-enforcer computes masks in Python. The
  library's own `llguidance.torch` helpers are not used because they `torch.compile` the mask kernel
  (a C++ tool-chain and seconds of compile time on CPU); applying a bit mask is three tensor ops.
- `RowSampler`: draws each row's next token with that row's own random generator (seeded from the
  row's cache key) after temperature / top-k / top-p, and hands the choice to greedy search. A
  sampled row's output therefore depends on its prompt and seed only, never on its batch-mates
  (`torch.manual_seed` + batched `multinomial` would tie every row to the whole batch).

Both work in numpy on CPU: a few element-wise passes over one vocabulary row, which torch would
spread over its intra-op thread pool at a cost far above the work on a busy 2-core machine.
"""

from __future__ import annotations

import logging
from typing import Sequence

from transformers import LogitsProcessor

log = logging.getLogger(__name__)

#: compact JSON with the usual separators: fewer tokens, nothing for a small model to ramble in
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class SchemaError(ValueError):
    """The backend cannot compile a schema (the message says why)."""


def ll_tokenizer(hf_tokenizer, n_vocab: int):
    """llguidance's view of a fast HF tokenizer (about 1 s; build once per backend)."""
    import llguidance
    import llguidance.hf

    from tkre.generate.schema import text_slices

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=n_vocab,
                                        slices=llguidance.LLTokenizer.general_slices() + text_slices())


def compile_schema(schema_text: str, tokenizer) -> str:
    """The llguidance grammar for a JSON schema; SchemaError when it cannot be compiled."""
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(schema_text, defaults=JSON_OPTIONS)
    except ValueError as e:
        raise SchemaError(f"schema is not valid JSON: {e}") from None
    error = LLMatcher.validate_grammar(grammar, tokenizer)
    if error:
        raise SchemaError(f"llguidance cannot compile the schema: {error[:300]}")
    return grammar


class SchemaMask(LogitsProcessor):
    """Logits processor: row i may only continue its JSON schema (None = free row)."""

    def __init__(self, tokenizer, grammars: Sequence[str | None], eos_ids: set[int]):
        from llguidance import LLMatcher

        self.matchers = [LLMatcher(tokenizer, g, log_level=0) if g else None for g in grammars]
        self.eos_ids = eos_ids
        self.started = False
        self.done = [m is None for m in self.matchers]
        self.errors: list[str | None] = [None] * len(self.matchers)

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        batch, vocab = scores.shape
        if self.started:  # feed each live row the token chosen at the previous step
            for i, m in enumerate(self.matchers):
                if self.done[i]:
                    continue
                token = int(input_ids[i, -1])
                if token in self.eos_ids or not m.consume_token(token):
                    self.done[i] = True
                    if m.is_error():
                        self.errors[i] = m.get_error()[:300]
        self.started = True
        words = (vocab + 31) // 32
        mask = np.full((batch, words), -1, dtype=np.int32)  # all bits set: a free row allows every token
        for i, m in enumerate(self.matchers):
            if not self.done[i]:
                m.unsafe_compute_mask_ptr(mask[i].ctypes.data, words * 4)
        # bit k of little-endian word w allows token 32 * w + k
        blocked = np.unpackbits(mask.view(np.uint8), axis=1, bitorder="little")[:, :vocab] == 0
        if scores.device.type == "cpu":  # numpy, single-threaded: torch's thread pool costs more than the op
            scores.numpy()[blocked] = float("-inf")
            return scores
        return scores.masked_fill(torch.from_numpy(blocked).to(scores.device), float("-inf"))


class RowSampler(LogitsProcessor):
    """Logits processor, last in the list: temperature, top-k, top-p, then a draw from row i's own
    generator; returns a one-hot choice for greedy search to take. The same semantics as transformers'
    warpers (top-k then the smallest top set holding `top_p` of the mass, at least one token), worked
    on the candidates only (at most top-k of them) instead of sorting the whole vocabulary."""

    def __init__(self, seeds: Sequence[int], *, temperature: float, top_k: int | None, top_p: float):
        import numpy as np

        self.generators = [np.random.default_rng(int(s)) for s in seeds]
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def _pick(self, row, rng) -> int:
        import numpy as np

        candidates = np.flatnonzero(np.isfinite(row))  # what the schema left
        if candidates.size == 0:
            return 0  # nothing allowed at all (cannot happen with a live schema)
        x = row[candidates].astype(np.float64) / self.temperature
        if self.top_k and candidates.size > self.top_k:
            keep = np.argpartition(-x, self.top_k - 1)[: self.top_k]
            candidates, x = candidates[keep], x[keep]
        order = np.argsort(-x, kind="stable")
        candidates, x = candidates[order], x[order]
        p = np.exp(x - x[0])
        p /= p.sum()
        if self.top_p < 1.0:
            n = int(np.searchsorted(np.cumsum(p), self.top_p, side="left")) + 1
            candidates, p = candidates[:n], p[:n] / p[:n].sum()
        cdf = np.cumsum(p)
        return int(candidates[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)])

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        logits = scores.detach().float().cpu().numpy()
        out = np.full(logits.shape, -np.inf, dtype=np.float32)
        for i, rng in enumerate(self.generators):
            out[i, self._pick(logits[i], rng)] = 0.0
        return torch.from_numpy(out).to(scores.device, scores.dtype)


def processors(*, temperature: float, top_p: float, top_k: int | None, seeds: Sequence[int],
               mask: SchemaMask | None) -> list:
    """[schema mask] + [per-row sampler (temperature, top-k, top-p)] when sampling; greedy: the mask only.

    The caller runs `generate(do_sample=False)`, so the one-hot output of `RowSampler` is what greedy takes."""
    out: list = [mask] if mask is not None else []
    if temperature > 0:
        out.append(RowSampler(seeds, temperature=temperature, top_k=top_k, top_p=top_p))
    return out

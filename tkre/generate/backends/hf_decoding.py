"""Decoding for the hf backend: per-row seeded sampling and the decode-time schema mask (llguidance).

`decode`, the backend's decoding loop (generate's steps for a left-padded batch, but a finished row
leaves the batch and its KV cache at once; why: its docstring), runs two transformers `LogitsProcessor`s
(also usable inside `model.generate`, where a batch position is its row):

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
  sampled row's draws therefore depend on its own logits and seed only, never on its batch-mates'
  (`torch.manual_seed` + batched `multinomial` would tie every row to the whole batch). Its logits
  agree across batches to float rounding, not bit for bit (a one-row matmul takes other kernels than
  a batched one), so a draw that lands within that rounding of a token boundary may differ.

Both work in numpy on CPU: a few element-wise passes over one vocabulary row, which torch would
spread over its intra-op thread pool at a cost far above the work on a busy 2-core machine.
"""

from __future__ import annotations

import inspect
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


class _RowProcessor(LogitsProcessor):
    """A processor with per-row state: `decode` sets `rows` (batch position -> row) at every step, as
    finished rows leave the batch; left unset (inside `model.generate`), a batch position is its row."""

    rows: list[int] | None = None

    def batch_rows(self, batch: int) -> Sequence[int]:
        return self.rows if self.rows is not None else range(batch)


class SchemaMask(_RowProcessor):
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
        rows = self.batch_rows(batch)
        if self.started:  # feed each live row the token chosen at the previous step
            for pos, i in enumerate(rows):
                if self.done[i]:
                    continue
                m = self.matchers[i]
                token = int(input_ids[pos, -1])
                if token in self.eos_ids or not m.consume_token(token):
                    self.done[i] = True
                    if m.is_error():
                        self.errors[i] = m.get_error()[:300]
        self.started = True
        words = (vocab + 31) // 32
        mask = np.full((batch, words), -1, dtype=np.int32)  # all bits set: a free row allows every token
        for pos, i in enumerate(rows):
            if not self.done[i]:
                self.matchers[i].unsafe_compute_mask_ptr(mask[pos].ctypes.data, words * 4)
        # bit k of little-endian word w allows token 32 * w + k
        blocked = np.unpackbits(mask.view(np.uint8), axis=1, bitorder="little")[:, :vocab] == 0
        if scores.device.type == "cpu":  # numpy, single-threaded: torch's thread pool costs more than the op
            scores.numpy()[blocked] = float("-inf")
            return scores
        return scores.masked_fill(torch.from_numpy(blocked).to(scores.device), float("-inf"))


class RowSampler(_RowProcessor):
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
        for pos, i in enumerate(self.batch_rows(len(self.generators))):
            out[pos, self._pick(logits[pos], self.generators[i])] = 0.0
        return torch.from_numpy(out).to(scores.device, scores.dtype)


def processors(*, temperature: float, top_p: float, top_k: int | None, seeds: Sequence[int],
               mask: SchemaMask | None) -> list:
    """[schema mask] + [per-row sampler (temperature, top-k, top-p)] when sampling; greedy: the mask only.

    The caller runs `generate(do_sample=False)`, so the one-hot output of `RowSampler` is what greedy takes."""
    out: list = [mask] if mask is not None else []
    if temperature > 0:
        out.append(RowSampler(seeds, temperature=temperature, top_k=top_k, top_p=top_p))
    return out


def decode(model, input_ids, attention_mask, *, max_new_tokens: int, eos_ids: set[int], procs: list) -> list[list[int]]:
    """Greedy decoding over the processors' output (which do the sampling), dropping every finished row
    from the batch and its KV cache at once; returns each row's new tokens (its EOS included).

    Why not `model.generate`: it keeps a finished row in the batch, computing it until the longest row
    ends. Constrained rows end at very different lengths (a closed JSON object ends the row), so half
    of such a batch could be finished rows (benchmarks/results.md: constrained tokens/s 0.795x free).
    The steps are generate's own for a left-padded batch: positions from the attention mask's running
    sum, one token in per step with the cache, the mask grown by one column."""
    import torch
    from transformers import DynamicCache

    rows = list(range(input_ids.shape[0]))
    out: list[list[int]] = [[] for _ in rows]
    cache = DynamicCache()
    # transformers 5.x names the cache argument `cache` (`past_key_values` is deprecated there); 4.x
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    positions = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
    step_ids, step_pos = input_ids, positions
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=step_pos,
                           use_cache=True, logits_to_keep=1, **{cache_arg: cache}).logits[:, -1, :].float()
            for p in procs:
                p.rows = rows
                logits = p(step_ids, logits)
            chosen = logits.argmax(dim=-1).tolist()
            keep = []
            for pos, (row, token) in enumerate(zip(rows, chosen)):
                out[row].append(token)
                if token not in eos_ids:
                    keep.append(pos)
            if not keep:
                break
            last = torch.tensor([[chosen[k]] for k in keep], device=input_ids.device)
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=input_ids.device)
                cache.batch_select_indices(index)
                attention_mask, step_pos = attention_mask[index], step_pos[index]
                rows = [rows[k] for k in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], dim=-1)
            step_ids, step_pos = last, step_pos[:, -1:] + 1
    return out

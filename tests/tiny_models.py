"""Tiny randomly initialised models with the real tokenizers: a BERT masked LM (MiniLM's WordPiece)
and causal LMs (SmolLM2's tokenizer), for fast tests and benchmarks of the plumbing.

Fast and deterministic: for the plumbing (batching, padding, Ray actors, cache, HTTP), never for
quality. The tokenizer comes from the embedded SmolLM2 GGUF (shared/models.md) and is cached per
process, so building several tiny models costs one tokenizer load.
"""

from __future__ import annotations

import functools
from pathlib import Path


def _saved_tokenizer(name: str):
    """The tokenizer saved under $TKRE_TEST_TOKENIZER_DIR/<name> when that variable is set: for a machine
    without the embedded model packages (the GPU check machine); None otherwise."""
    import os

    from transformers import AutoTokenizer

    root = os.environ.get("TKRE_TEST_TOKENIZER_DIR")
    return AutoTokenizer.from_pretrained(Path(root) / name) if root else None


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
    """SmolLM2's tokenizer, from the embedded GGUF (or a saved copy: see `_saved_tokenizer`)."""
    from transformers import AutoTokenizer

    saved = _saved_tokenizer("smollm2")
    if saved:
        return saved
    from tkre.model_sources import embedded_file

    gguf = embedded_file("embedded:smollm2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def make_tiny_llama(out: str | Path, *, seed: int = 0) -> str:
    """Save a 2-layer, 32-wide LlamaForCausalLM with the SmolLM2 tokenizer (and chat template) at `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tok = smollm2_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def make_tiny_encoder(out: str | Path, *, seed: int = 0) -> str:
    """Save a 2-layer, 32-wide BertForMaskedLM with the embedded MiniLM tokenizer at `out`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = _saved_tokenizer("minilm")
    if tok is None:
        from tkre.model_sources import resolve_encoder

        tok = AutoTokenizer.from_pretrained(resolve_encoder("embedded:minilm"))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertForMaskedLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)

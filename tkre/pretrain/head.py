"""Options for a masked-LM head the encoder's checkpoint does not have (issue 16 item 3).

MiniLM (`embedded:minilm`) is a sentence-embedding model: its checkpoint has the encoder but no MLM
head, so transformers initialises the head's transform (a dense layer + LayerNorm) at random and
MSLM first has to learn a head before its gradient says anything useful to the encoder. Two
remedies that leave the method as it is, both off by default (the paper's encoders ship a trained
head):

- `init_missing_head(mlm, missing)` ("embeddings" in `pretrain.mlm_head_init`): the head's square
  dense layers start as the identity with zero bias, its LayerNorms as (1, 0), its output bias as 0,
  and the decoder as the input embeddings (tied, as BERT and RoBERTa tie them) -- so the very first
  logits score each vocabulary item by its similarity to the encoder's output state. Only the
  parameters the checkpoint lacked are touched.
- `freeze_all_but_head(mlm)`: used for a short head-only warm-up (`pretrain.mlm_head_warmup_epochs`)
  on the stage-1 corpus before stage 1. The decoder weight is the (frozen) input embedding matrix
  when tied, so the warm-up trains the transform and the output bias.

Measured (MiniLM, MSLM loss on SemEval 8-shot seed-1 golden texts, masks fixed; one seed, 2026-11):
at the start 10.70 with the random head vs 11.35 with "embeddings" (uniform = 10.33); after 3
epochs head-only (lr 1e-3) 7.33 vs 7.44; after 3 epochs of the whole model (lr 1e-4) 7.00 vs 7.07.
So "embeddings" does not lower the MSLM loss at the start. On dev, in the CPU study's TKRE setting
(sweeps/cpu_semeval_mlm_head.yaml, seeds 1-3; results/cpu_semeval/README.md): with neither remedy,
dev micro-F1 is 1.18 ± 0.59 points below both (lower on every seed); "embeddings" alone matches both
(+0.13 ± 0.44) and ends stage 1 with the lowest held-out MSLM loss (6.27 vs 6.35 with neither); the
warm-up alone recovers most of it (-0.28 ± 0.27).

Hand-written because transformers has no "initialise the missing head sensibly" helper (its
`_init_weights` is the random init this replaces).
"""

from __future__ import annotations

import torch

from tkre.errors import TkreError

HEAD_ATTRIBUTES = ("cls", "lm_head")  # BERT-family, RoBERTa-family masked LMs


def mlm_head(mlm: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """(attribute name, module) of the masked LM's head; a clear error for an unknown layout."""
    for name in HEAD_ATTRIBUTES:
        if hasattr(mlm, name):
            return name, getattr(mlm, name)
    raise TkreError(f"{type(mlm).__name__}: no MLM head found (looked for {', '.join(HEAD_ATTRIBUTES)}); "
                    f"the head options need a BERT- or RoBERTa-style masked LM")


@torch.no_grad()
def init_missing_head(mlm: torch.nn.Module, missing: set[str] | list[str]) -> list[str]:
    """Re-initialise the head parameters named in `missing` (from_pretrained's loading info):
    square Linear -> identity + zero bias, LayerNorm -> (1, 0), output bias -> 0, decoder -> tied to
    the input embeddings. Returns the parameter names it set (empty when the head was complete)."""
    prefix, head = mlm_head(mlm)
    missing = set(missing)
    embeddings = mlm.get_input_embeddings().weight
    vocab = embeddings.shape[0]
    done: list[str] = []

    def reset(param: torch.Tensor, name: str, fn) -> None:
        if name in missing and param is not None:
            fn(param)
            done.append(name)

    for name, module in head.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if isinstance(module, torch.nn.Linear) and module.out_features == vocab:  # the decoder
            if f"{full}.weight" in missing and module.weight is not embeddings:
                module.weight = embeddings  # tie, as tie_word_embeddings does
                done.append(f"{full}.weight")
        elif isinstance(module, torch.nn.Linear) and module.in_features == module.out_features:  # transform
            reset(module.weight, f"{full}.weight", torch.nn.init.eye_)
            reset(module.bias, f"{full}.bias", torch.nn.init.zeros_)
        elif isinstance(module, torch.nn.LayerNorm):
            reset(module.weight, f"{full}.weight", torch.nn.init.ones_)
            reset(module.bias, f"{full}.bias", torch.nn.init.zeros_)
    for name, param in head.named_parameters():  # the output bias (BERT shares it with decoder.bias)
        if param.ndim == 1 and param.shape[0] == vocab:
            reset(param, f"{prefix}.{name}", torch.nn.init.zeros_)
    return sorted(done)


def freeze_all_but_head(mlm: torch.nn.Module) -> int:
    """requires_grad=False on every parameter outside the MLM head (and on tied input embeddings).
    Returns the number of trainable parameters left."""
    _, head = mlm_head(mlm)
    trainable = {id(p) for p in head.parameters()} - {id(mlm.get_input_embeddings().weight)}
    for p in mlm.parameters():
        p.requires_grad_(id(p) in trainable)
    left = sum(p.numel() for p in mlm.parameters() if p.requires_grad)
    if left == 0:
        raise TkreError("head-only warm-up: the MLM head has no parameter of its own to train")
    return left

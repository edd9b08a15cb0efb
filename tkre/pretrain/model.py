"""Any Hugging Face masked LM plus the SCL anchor table: L = lambda1 * L_mslm + lambda2 * L_scl.

Saved as a plain HF checkpoint (`save_pretrained` of the masked LM + tokenizer) that fine-tuning
loads with `from_pretrained`; the anchor table is saved beside it (tkre_scl_*.{pt,json}).
"""

from __future__ import annotations

import json
import logging
import os

import torch
import torch.nn.functional as F

from tkre.config import SCLConfig
from tkre.errors import TkreError
from tkre.model_sources import resolve_encoder
from tkre.pretrain.masking import IGNORE_INDEX
from tkre.pretrain.scl import AnchorTable, masked_scl_loss

logger = logging.getLogger(__name__)


def check_init_dir(init: str) -> str:
    """Resolve `init` (HF id, local folder, embedded:minilm) and, for a local folder, check that it
    holds an HF model whose tokenizer fits it. Raises TkreError naming the folder otherwise."""
    path = resolve_encoder(init)
    if not os.path.isdir(path):
        return path  # a Hub id: from_pretrained reports problems itself
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise TkreError(f"{path}: not a Hugging Face model folder (no config.json)")
    with open(cfg_file, encoding="utf-8") as f:
        cfg = json.load(f)
    if "vocab_size" not in cfg or "hidden_size" not in cfg:
        raise TkreError(f"{path}: config.json has no vocab_size/hidden_size -- not a masked-LM encoder")
    return path


class MSLMSCLModel(torch.nn.Module):
    """Masked LM + (optional) anchor table. forward(**batch) -> {"loss", "mslm_loss", "scl_loss"}.

    `scl`: stage 2's loss settings (weights, temperature); None = MSLM alone (stage 1)."""

    def __init__(self, mlm: torch.nn.Module, anchors: AnchorTable | None, *, scl: SCLConfig | None = None):
        super().__init__()
        self.mlm, self.anchors, self.scl = mlm, anchors, scl

    @classmethod
    def from_pretrained(cls, init: str, *, relations: list[str] | None = None, scl: SCLConfig | None = None,
                        seed: int = 0, head_init: str = "random") -> "MSLMSCLModel":
        """Load the masked LM from `init`; build (or reload, when saved beside it with the same
        relations) the anchor table when `relations` is given. Deterministic for a given seed.
        head_init "embeddings": head weights missing from the checkpoint start as in
        tkre.pretrain.head.init_missing_head instead of at random."""
        from transformers import AutoModelForMaskedLM

        path = check_init_dir(init)
        torch.manual_seed(seed)  # weights missing from the file (e.g. MiniLM's MLM head) start the same
        try:
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
        except (ValueError, OSError, KeyError) as e:
            raise TkreError(f"{path}: cannot load as a masked-LM encoder: {e}") from None
        if head_init == "embeddings":
            from tkre.pretrain.head import init_missing_head

            done = init_missing_head(mlm, info["missing_keys"])
            if done:
                logger.info("%s: MLM head missing from the checkpoint initialised from the embeddings: %s",
                            path, ", ".join(done))
        elif head_init != "random":
            raise TkreError(f"unknown mlm_head_init {head_init!r} (known: random, embeddings)")
        anchors = None
        if relations is not None:
            hidden = mlm.config.hidden_size
            saved = AnchorTable.load(path, hidden) if os.path.isdir(path) else None
            anchors = saved if saved is not None and saved.relations == list(relations) else AnchorTable(relations, hidden)
        return cls(mlm, anchors, scl=scl)

    def _encoder_and_head(self):
        """(encoder, MLM head) when the masked LM exposes them (BERT: `bert` + `cls`, RoBERTa:
        `roberta` + `lm_head`, ...), else (None, None). With them, vocabulary logits are computed for
        the masked positions only -- the same loss at a fraction of the cost of full logits."""
        base = getattr(self.mlm, getattr(self.mlm, "base_model_prefix", ""), None)
        head = next((getattr(self.mlm, n) for n in ("cls", "lm_head") if hasattr(self.mlm, n)), None)
        return (base, head) if base is not None and head is not None else (None, None)

    def forward(self, input_ids, attention_mask, labels, pos_mask=None, neg_mask=None, relation=None,
                token_type_ids=None, full_logits: bool = False):
        want_scl = (self.anchors is not None and relation is not None and self.scl is not None
                    and self.scl.lambda2 > 0)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        n_masked = (labels != IGNORE_INDEX).sum()
        base, head = (None, None) if full_logits else self._encoder_and_head()
        if base is not None:
            hidden = base(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
            selected = labels != IGNORE_INDEX
            logits, targets = head(hidden[selected]), labels[selected]
        else:
            out = self.mlm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_scl,
                           **extra)
            hidden = out.hidden_states[-1] if want_scl else None
            logits, targets = out.logits.view(-1, out.logits.size(-1)), labels.view(-1)
        # sum / count instead of mean: a batch without masked tokens gives 0, not NaN
        mslm = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX,
                               reduction="sum") / n_masked.clamp(min=1)
        result = {"mslm_loss": mslm}
        loss = (self.scl.lambda1 if self.scl is not None else 1.0) * mslm
        if want_scl:
            scl, n_scl = masked_scl_loss(self.anchors(relation), pos_mask, neg_mask, hidden, self.scl.tau)
            result["scl_loss"] = scl
            result["scl_examples"] = torch.tensor(float(n_scl))
            loss = loss + self.scl.lambda2 * scl
        result["loss"] = loss
        return result

    def save(self, directory: str, tokenizer=None) -> None:
        """Plain HF checkpoint of the masked LM (+ tokenizer), anchors beside it."""
        os.makedirs(directory, exist_ok=True)
        self.mlm.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        if self.anchors is not None:
            self.anchors.save(directory)

"""`PretrainTask`: the `tkre.train_loop.TrainTask` for one pre-training stage (MSLM, or MSLM + SCL).

Built on the driver with the corpus already tokenized; shipped (pickled) to the Ray Train workers.
`evaluate` reports the MSLM (and SCL) loss on a sample of the stage's corpus (a copy -- the stage
trains on every text; see `stages.heldout_sample`) with masks fixed across epochs, so the numbers of
different epochs are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from tkre.store.refs import HandOver, materialise
from tkre.config import SCLConfig
from tkre.pretrain.data import EncodedText, MaskedSpanDataset, MaskingSettings, collate_masked
from tkre.pretrain.masking import IGNORE_INDEX
from tkre.pretrain.model import MSLMSCLModel

HELDOUT_EPOCH = -1  # the held-out masks are drawn once, with this epoch number


@dataclass
class PretrainTask:
    init_path: HandOver  # the weights to start from: opened with `materialise` on the node that runs this
    train_items: list[EncodedText]
    heldout_items: list[EncodedText]
    masking: MaskingSettings
    relations: list[str] | None = None  # SCL on when given
    scl: SCLConfig | None = None  # stage 2's loss settings; None = MSLM alone (stage 1)
    eval_batch_size: int = 32
    head_init: str = "random"  # PretrainConfig.mlm_head_init
    head_only: bool = False    # train the MLM head alone (the head warm-up before stage 1)

    def build_model(self) -> MSLMSCLModel:
        model = MSLMSCLModel.from_pretrained(materialise(self.init_path), relations=self.relations, scl=self.scl,
                                             seed=self.masking.seed, head_init=self.head_init)
        if self.head_only:
            from tkre.pretrain.head import freeze_all_but_head

            freeze_all_but_head(model.mlm)
        return model

    def train_dataset(self) -> MaskedSpanDataset:
        return MaskedSpanDataset(self.train_items, self.masking)

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        return collate_masked(items, self.masking.pad_token_id)

    def loss(self, model, batch):
        out = model(**batch)
        return out["loss"], {k: float(v.detach()) for k, v in out.items() if k != "loss"}

    def evaluate(self, model, epoch: int) -> dict[str, float]:
        """Token-weighted MSLM loss on the evaluation sample (+ mean SCL loss when SCL is on)."""
        ds = MaskedSpanDataset(self.heldout_items, self.masking, epoch=HELDOUT_EPOCH)
        device = next(model.parameters()).device
        ce_sum, n_tok, scl_sum, n_ex = 0.0, 0, 0.0, 0
        collate = partial(collate_masked, pad_token_id=self.masking.pad_token_id)
        for start in range(0, len(ds), self.eval_batch_size):
            batch = collate([ds[i] for i in range(start, min(len(ds), start + self.eval_batch_size))])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            n = int((batch["labels"] != IGNORE_INDEX).sum())
            ce_sum += float(out["mslm_loss"]) * n
            n_tok += n
            if "scl_loss" in out:  # mean over the examples that have an SCL term
                scl_sum += float(out["scl_loss"]) * float(out["scl_examples"])
                n_ex += int(out["scl_examples"])
        metrics = {"heldout_mslm_loss": ce_sum / max(1, n_tok), "heldout_masked_tokens": n_tok}
        if n_ex:
            metrics["heldout_scl_loss"] = scl_sum / n_ex
        return metrics

    def save(self, model: MSLMSCLModel, directory: str) -> None:
        from transformers import AutoTokenizer

        model.save(directory, tokenizer=AutoTokenizer.from_pretrained(materialise(self.init_path)))

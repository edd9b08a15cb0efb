"""CUDA paths that need no Ray (the GPU check machine has torch and transformers, not Ray): the
pre-training model (MSLM + SCL) and the TYP Marker classifier on a GPU, in float32 and under the
training loop's mixed precision on CUDA (bf16 autocast, tkre.train_loop), against the same forward in
float32 on the CPU; then one backward pass. Run with --run-gpu; the hf generation backend's CUDA path
is covered by tests/test_generate_constrained.py's `cuda` parameter."""

from __future__ import annotations

import copy

import pytest
import torch

from tkre.pretrain.masking import IGNORE_INDEX

pytestmark = pytest.mark.gpu


def _cuda(batch: dict) -> dict:
    return {k: v.cuda() for k, v in batch.items()}


def _pretrain_batch() -> dict:
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 102], [101, 2004, 2005, 2006, 102, 0]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2], labels[1, 3] = 2001, 2006
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels,
            "pos_mask": torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool),
            "neg_mask": torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool),
            "relation": torch.tensor([0, 1])}


def _check_grads(model) -> None:
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_pretrain_losses_on_cuda_match_cpu_in_fp32_and_bf16_autocast(tiny_encoder_dir):
    from tkre.config import SCLConfig
    from tkre.pretrain.model import MSLMSCLModel

    cpu = MSLMSCLModel.from_pretrained(tiny_encoder_dir, relations=["a", "b"], scl=SCLConfig(lambda2=0.5)).eval()
    gpu = copy.deepcopy(cpu).cuda()
    batch = _pretrain_batch()
    ref = cpu(**batch)
    fp32 = gpu(**_cuda(batch))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = gpu(**_cuda(batch))
    for key in ("mslm_loss", "scl_loss", "loss"):
        assert fp32[key].device.type == "cuda", key
        assert float(fp32[key]) == pytest.approx(float(ref[key]), rel=1e-4), key
        assert float(mixed[key]) == pytest.approx(float(ref[key]), rel=3e-2), key
    assert int(mixed["scl_examples"]) == 2
    mixed["loss"].backward()
    _check_grads(gpu)
    assert float(gpu.anchors.embedding.weight.grad.abs().sum()) > 0  # SCL reaches the relation anchors


def test_typ_marker_loss_on_cuda_matches_cpu_in_fp32_and_bf16_autocast(tiny_encoder_dir):
    from tkre.finetune.typ_marker import build_model

    cpu = build_model(tiny_encoder_dir, num_labels=3).eval()
    gpu = copy.deepcopy(cpu).cuda()
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 102], [101, 2004, 2005, 2006, 102, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "subj_pos": torch.tensor([1, 1]),
             "obj_pos": torch.tensor([3, 2]), "labels": torch.tensor([2, 0])}
    ref = cpu(**batch)
    fp32 = gpu(**_cuda(batch))
    assert torch.allclose(fp32["scores"].cpu(), ref["scores"], rtol=1e-4, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = gpu(**_cuda(batch))
    assert float(mixed["loss"]) == pytest.approx(float(ref["loss"]), rel=3e-2)
    mixed["loss"].backward()
    _check_grads(gpu)

"""Options for an encoder without a trained MLM head (MiniLM): initialise the missing head from the
embeddings, and a head-only warm-up before stage 1. Both off by default."""

from __future__ import annotations

import json

import pytest
import torch

from tkre.config import PretrainConfig, ResourcesConfig, StageConfig
from tkre.pretrain.head import freeze_all_but_head, init_missing_head


@pytest.fixture(scope="module")
def headless_encoder(tmp_path_factory, tiny_encoder_dir):
    """The tiny BERT body saved without its MLM head (as MiniLM ships), with the tokenizer."""
    from transformers import AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("headless")
    BertModel.from_pretrained(tiny_encoder_dir, add_pooling_layer=False).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_encoder_dir).save_pretrained(out)
    return str(out)


def test_defaults_leave_the_method_unchanged():
    cfg = PretrainConfig()
    assert cfg.mlm_head_init == "random" and cfg.mlm_head_warmup_epochs == 0


def test_missing_bert_head_starts_from_the_embeddings(headless_encoder):
    from tkre.pretrain.model import MSLMSCLModel

    model = MSLMSCLModel.from_pretrained(headless_encoder, head_init="embeddings").mlm
    pred = model.cls.predictions
    hidden = model.config.hidden_size
    assert torch.equal(pred.transform.dense.weight, torch.eye(hidden))
    assert not pred.transform.dense.bias.any() and not pred.bias.any()
    assert torch.equal(pred.transform.LayerNorm.weight, torch.ones(hidden))
    assert pred.decoder.weight is model.get_input_embeddings().weight
    random = MSLMSCLModel.from_pretrained(headless_encoder).mlm  # the default: transformers' random init
    assert not torch.equal(random.cls.predictions.transform.dense.weight, torch.eye(hidden))
    # the body is the checkpoint's either way
    assert torch.equal(random.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)


def test_a_complete_head_is_never_touched(tiny_encoder_dir):
    from transformers import AutoModelForMaskedLM

    mlm, info = AutoModelForMaskedLM.from_pretrained(tiny_encoder_dir, output_loading_info=True)
    before = {k: v.clone() for k, v in mlm.cls.state_dict().items()}
    assert init_missing_head(mlm, info["missing_keys"]) == []
    assert all(torch.equal(before[k], v) for k, v in mlm.cls.state_dict().items())


def test_roberta_layout_and_untied_decoder():
    from transformers import RobertaConfig, RobertaForMaskedLM

    mlm = RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, tie_word_embeddings=False))
    assert mlm.lm_head.decoder.weight is not mlm.get_input_embeddings().weight
    missing = [f"lm_head.{n}" for n, _ in mlm.lm_head.named_parameters()] + ["lm_head.decoder.weight"]
    done = init_missing_head(mlm, missing)
    assert "lm_head.dense.weight" in done and "lm_head.decoder.weight" in done and "lm_head.bias" in done
    assert torch.equal(mlm.lm_head.dense.weight, torch.eye(16)) and not mlm.lm_head.bias.any()
    assert mlm.lm_head.decoder.weight is mlm.get_input_embeddings().weight


def test_freeze_all_but_head(tiny_encoder_dir):
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(tiny_encoder_dir)
    left = freeze_all_but_head(mlm)
    trainable = {n for n, p in mlm.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("cls.") for n in trainable)
    assert not mlm.get_input_embeddings().weight.requires_grad  # tied decoder: the embeddings stay frozen
    assert left == sum(p.numel() for n, p in mlm.named_parameters() if n in trainable)


def test_head_warmup_then_stage1_trains_the_head_first(ray_local, semeval, headless_encoder, tmp_path):
    from safetensors.torch import load_file

    from tkre.data import sample_kshot
    from tkre.pretrain import pretrain_stage1

    golden = sample_kshot(semeval, k=2, seed=1).train
    stage = StageConfig(epochs=1, lr=3e-3, batch_size=16)
    cfg = PretrainConfig(encoder=headless_encoder, max_length=32, stage1=stage, stage2=stage, warmup_ratio=0.0,
                         mlm_head_init="embeddings", mlm_head_warmup_epochs=1,
                         resources=ResourcesConfig(num_workers=1, cpus_per_worker=1.0))
    s1 = pretrain_stage1(cfg, init=headless_encoder, golden=golden, explanations=None, out_dir=tmp_path / "s1")
    warm = s1["head_warmup"]
    assert s1["init"] == warm["checkpoint"] and warm["init"] == headless_encoder
    assert [h["epoch"] for h in warm["history"]] == [0] and warm["heldout_mslm_loss_after"] < warm["heldout_mslm_loss_before"]
    assert json.loads((tmp_path / "s1" / "summary.json").read_text())["head_warmup"]["checkpoint"] == warm["checkpoint"]
    start = load_file(f"{headless_encoder}/model.safetensors")
    after_warm = load_file(f"{warm['checkpoint']}/model.safetensors")
    after_s1 = load_file(f"{s1['checkpoint']}/model.safetensors")
    body = "bert.encoder.layer.0.output.dense.weight"
    key = body if body in start else body.removeprefix("bert.")
    assert torch.equal(start[key], after_warm[body])          # warm-up: the encoder is frozen
    assert not torch.equal(after_warm[body], after_s1[body])  # stage 1 then trains it
    dense = "cls.predictions.transform.dense.weight"
    assert not torch.equal(after_warm[dense], torch.eye(after_warm[dense].shape[0]))  # the head moved

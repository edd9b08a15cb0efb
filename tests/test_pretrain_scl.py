"""SCL loss against a hand computation and its gradient direction; pooling; negative spans; anchors;
the MSLM + SCL model on a tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch

from tkre.errors import TkreError
from tkre.pretrain.masking import ENTITY, IGNORE_INDEX, OTHER, RELATION, SPECIAL
from tkre.pretrain.scl import AnchorTable, sample_negative_span, scl_loss, span_mean_pool


def test_scl_loss_matches_hand_computation():
    a, p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    # cos(a,p) = 1/sqrt(2), cos(a,n) = 0, tau = 0.5
    s_p, s_n = (1 / math.sqrt(2)) / 0.5, 0.0
    expected = -math.log(math.exp(s_p) / (math.exp(s_p) + math.exp(s_n)))
    assert float(scl_loss(a, p, n, tau=0.5)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.217622, abs=1e-6)  # log(1 + e^-sqrt(2))
    # batch mean, and large cosines / tiny tau do not overflow
    batch = scl_loss(torch.cat([a, a]), torch.cat([p, n]), torch.cat([n, p]), tau=0.5)
    assert float(batch) == pytest.approx((expected + (expected + s_p)) / 2, rel=1e-6)
    assert torch.isfinite(scl_loss(a, a, -a, tau=1e-4))


def test_scl_gradient_pulls_positive_and_pushes_negative():
    torch.manual_seed(0)
    a = torch.randn(4, 8, requires_grad=True)
    p = torch.randn(4, 8, requires_grad=True)
    n = torch.randn(4, 8, requires_grad=True)
    cos = torch.nn.functional.cosine_similarity
    before_p, before_n = cos(a, p).detach(), cos(a, n).detach()
    loss = scl_loss(a, p, n, tau=0.1)
    loss.backward()
    with torch.no_grad():
        step = 1e-3
        a2, p2, n2 = a - step * a.grad, p - step * p.grad, n - step * n.grad
        assert float(scl_loss(a2, p2, n2, 0.1)) < float(loss)
        assert (cos(a2, p2) > before_p).all() and (cos(a2, n2) < before_n).all()


def test_span_mean_pool():
    h = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    m = torch.tensor([[False, True, True, False]])
    assert span_mean_pool(h, m).tolist() == [[4.5, 5.5, 6.5]]
    assert span_mean_pool(h, torch.zeros(1, 4, dtype=torch.bool)).tolist() == [[0.0, 0.0, 0.0]]


def test_negative_span_is_1_to_3_contiguous_non_entity_tokens():
    roles = torch.tensor([SPECIAL, OTHER, OTHER, ENTITY, RELATION, RELATION, ENTITY, OTHER, OTHER, OTHER, OTHER,
                          SPECIAL])
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(300):
        mask, ok = sample_negative_span(roles, 1, 3, g)
        idx = mask.nonzero().flatten().tolist()
        assert ok and 1 <= len(idx) <= 3 and idx == list(range(idx[0], idx[0] + len(idx)))
        assert all(int(roles[i]) == OTHER for i in idx)  # one run of OTHER tokens, never across an entity
        lengths.add(len(idx))
    assert lengths == {1, 2, 3}
    # no OTHER token: falls back to the relation span and says so
    mask, ok = sample_negative_span(torch.tensor([SPECIAL, ENTITY, RELATION, ENTITY, SPECIAL]), 1, 3, g)
    assert not ok and mask.tolist() == [False, False, True, False, False]
    with pytest.raises(TkreError, match="unknown negative span strategy"):
        sample_negative_span(roles, 1, 3, g, strategy="nope")


def test_anchor_table_missing_relation_and_foreign_checkpoint(tmp_path):
    table = AnchorTable(["Cause-Effect(e1,e2)", "Other"], hidden_size=4)
    assert table.index("Other") == 1
    with pytest.raises(TkreError, match=r"relation 'Born-In' \(example 7\) is missing from the SCL anchor table"):
        table.index("Born-In", record="7")
    table.save(str(tmp_path))
    assert AnchorTable.load(str(tmp_path), 4).relations == table.relations
    assert torch.equal(AnchorTable.load(str(tmp_path), 4).embedding.weight, table.embedding.weight)
    with pytest.raises(TkreError, match="from another model"):
        AnchorTable.load(str(tmp_path), 8)


def test_model_losses_and_plain_hf_checkpoint(tiny_encoder_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from tkre.pretrain.model import MSLMSCLModel

    model = MSLMSCLModel.from_pretrained(tiny_encoder_dir, relations=["a", "b"], lambda1=1.0, lambda2=0.5, tau=0.1)
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 102], [101, 2004, 2005, 102, 0, 0]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2] = 2001
    att = (ids != 0).long()
    pos = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    neg = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    out = model(input_ids=ids, attention_mask=att, labels=labels, pos_mask=pos, neg_mask=neg,
                relation=torch.tensor([0, 1]))
    logits = model.mlm(input_ids=ids, attention_mask=att).logits
    assert float(out["mslm_loss"]) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[0, 2:3],
                                                                                            torch.tensor([2001]))), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(out["mslm_loss"]) + 0.5 * float(out["scl_loss"]), rel=1e-6)
    # the masked-positions-only head (BERT: bert + cls) gives exactly the full-logits losses
    assert model._encoder_and_head()[0] is not None
    full = model(input_ids=ids, attention_mask=att, labels=labels, pos_mask=pos, neg_mask=neg,
                 relation=torch.tensor([0, 1]), full_logits=True)
    for key in ("mslm_loss", "scl_loss", "loss"):
        assert float(full[key]) == pytest.approx(float(out[key]), rel=1e-5)
    none = model(input_ids=ids, attention_mask=att, labels=torch.full_like(ids, IGNORE_INDEX))
    assert float(none["mslm_loss"]) == 0.0 and "scl_loss" not in none  # no NaN without masked tokens

    model.save(str(tmp_path / "ckpt"), tokenizer=AutoTokenizer.from_pretrained(tiny_encoder_dir))
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "ckpt")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.mlm.state_dict().items())
    again = MSLMSCLModel.from_pretrained(str(tmp_path / "ckpt"), relations=["a", "b"])
    assert torch.equal(again.anchors.embedding.weight, model.anchors.embedding.weight)


def test_init_that_is_not_an_encoder_is_a_clear_error(tmp_path):
    from tkre.pretrain.model import MSLMSCLModel

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(TkreError, match="not a Hugging Face model folder"):
        MSLMSCLModel.from_pretrained(str(tmp_path))

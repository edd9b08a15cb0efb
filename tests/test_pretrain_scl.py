"""SCL loss against a hand computation and its gradient direction; pooling; negative spans; anchors;
the MSLM + SCL model on a tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch

from tkre.errors import TkreError
from tkre.pretrain.masking import ENTITY, IGNORE_INDEX, OTHER, RELATION, SPECIAL
from tkre.pretrain.scl import AnchorTable, masked_scl_loss, sample_negative_span, scl_loss, span_mean_pool


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
    # no OTHER token: no negative at all (never the relation span, which is the positive), and it says so
    mask, ok = sample_negative_span(torch.tensor([SPECIAL, ENTITY, RELATION, ENTITY, SPECIAL]), 1, 3, g)
    assert not ok and not mask.any()
    with pytest.raises(TkreError, match="unknown negative span strategy"):
        sample_negative_span(roles, 1, 3, g, strategy="nope")


def test_examples_without_a_negative_span_have_no_scl_term():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, requires_grad=True)
    anchor = torch.randn(3, 4, requires_grad=True)
    pos = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    neg = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)  # row 1: none
    loss, n = masked_scl_loss(anchor, pos, neg, hidden, tau=0.1)
    keep = [0, 2]
    expected = scl_loss(anchor[keep], span_mean_pool(hidden[keep], pos[keep]), span_mean_pool(hidden[keep], neg[keep]),
                        0.1)
    assert n == 2 and float(loss) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert torch.all(hidden.grad[1] == 0) and torch.all(anchor.grad[1] == 0)  # the skipped row: no signal
    # no example with an SCL term: an exact 0 that still reaches the anchors (DDP needs every gradient)
    anchor.grad = None
    zero, n = masked_scl_loss(anchor, pos, torch.zeros_like(neg), hidden, tau=0.1)
    assert n == 0 and float(zero) == 0.0
    zero.backward()
    assert anchor.grad is not None and torch.all(anchor.grad == 0)


def test_dataset_and_corpus_count_examples_without_negative(tiny_encoder_dir):
    from transformers import AutoTokenizer

    from tkre.config import SCLConfig
    from tkre.pretrain.data import SCL_SKIPPED, MaskedSpanDataset, MaskingSettings, SpanText, encode_corpus
    from tkre.pretrain.masking import MaskingProbabilities

    wordpiece_tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    texts = [SpanText("Alice founded Acme", (0, 5), (14, 18), "founder", "a"),  # no token outside spans
             SpanText("Yesterday Alice founded Acme in Paris", (10, 15), (24, 28), "founder", "b")]
    items, counts = encode_corpus(wordpiece_tokenizer, texts, max_length=32, relation_index=lambda rel, rec: 0)
    assert counts[SCL_SKIPPED] == 1 and len(items) == 2
    settings = MaskingSettings(masking="mslm", probs=MaskingProbabilities(0.8, 0.5, 0.2), bert_rate=0.15,
                               mask_token_id=wordpiece_tokenizer.mask_token_id, vocab_size=len(wordpiece_tokenizer),
                               pad_token_id=0, seed=0, scl=SCLConfig())
    ds = MaskedSpanDataset(items, settings)
    for epoch in range(5):
        ds.set_epoch(epoch)
        first, second = ds[0], ds[1]
        assert first["pos_mask"].any() and not first["neg_mask"].any()  # never the relation span
        assert second["neg_mask"].any() and not (second["neg_mask"] & second["pos_mask"]).any()


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

    from tkre.config import SCLConfig
    from tkre.pretrain.model import MSLMSCLModel

    model = MSLMSCLModel.from_pretrained(tiny_encoder_dir, relations=["a", "b"], scl=SCLConfig(lambda2=0.5))
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
    # the second example without a negative span: the SCL loss is the first example's alone
    one_neg = neg.clone()
    one_neg[1] = False
    skip = model(input_ids=ids, attention_mask=att, labels=labels, pos_mask=pos, neg_mask=one_neg,
                 relation=torch.tensor([0, 1]))
    first = model(input_ids=ids[:1], attention_mask=att[:1], labels=labels[:1], pos_mask=pos[:1], neg_mask=neg[:1],
                  relation=torch.tensor([0]))
    assert int(skip["scl_examples"]) == 1 and int(out["scl_examples"]) == 2
    assert float(skip["scl_loss"]) == pytest.approx(float(first["scl_loss"]), rel=1e-4)
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

"""Both pre-training stages end to end on local Ray (2 Train workers), bad inputs, and the real
MiniLM encoder through the CLI (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tkre.config import PretrainConfig, ResourcesConfig, StageConfig
from tkre.data import RelationExample, sample_kshot
from tkre.errors import TkreError
from tkre.pretrain import pretrain_stage1, pretrain_stage2


def _explanations(golden: list[RelationExample]) -> list[dict]:
    """Explanation-corpus rows in the generation helper's format (text written here, not by an LLM)."""
    return [{"relation": ex.relation, "subject": ex.subject, "object": ex.object, "source_id": ex.id,
             "text": ex.text, "explanation": f"The text says that {ex.subject.upper()} is linked to {ex.object} "
                                             f"because the sentence describes it that way.", "generator": "test"}
            for ex in golden]


def _cfg(encoder: str, epochs: int = 2, **kw) -> PretrainConfig:
    stage = StageConfig(epochs=epochs, lr=3e-3, batch_size=16)
    return PretrainConfig(encoder=encoder, max_length=24, stage1=stage, stage2=stage, warmup_ratio=0.0,
                          resources=ResourcesConfig(num_workers=2, cpus_per_worker=1.0), **kw)


def test_two_stages_on_two_workers_lower_heldout_mslm_loss(ray_local, semeval, tiny_encoder_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    golden = sample_kshot(semeval, k=8, seed=1).train
    cfg = _cfg(tiny_encoder_dir)
    s1 = pretrain_stage1(cfg, init=tiny_encoder_dir, golden=golden, explanations=_explanations(golden[:40]),
                         out_dir=tmp_path / "s1")
    assert s1["texts"] == len(golden) + 40
    assert s1["skipped"]["entity_truncated"] > 0  # max_length=24 cuts some SemEval sentences: counted, not lost
    # every encoded text is trained on; the evaluation sample is a copy of 10 % of them
    assert s1["train_texts"] + s1["skipped_total"] == s1["texts"] and s1["heldout_is_copy"]
    assert s1["heldout_texts"] == round(0.1 * s1["train_texts"])
    assert s1["heldout_mslm_loss_after"] < s1["heldout_mslm_loss_before"] - 0.5, s1["history"]
    assert [h["epoch"] for h in s1["history"]] == [0, 1] and s1["history"][0]["tokens_per_s"] > 0
    assert not s1["scl"] and "train_scl_loss" not in s1["history"][0]
    assert json.loads((tmp_path / "s1" / "summary.json").read_text())["checkpoint"] == s1["checkpoint"]

    synthetic = [RelationExample(**{**ex.to_dict(), "id": f"syn{ex.id}", "source": "synthetic:test"})
                 for ex in golden[:20]]
    s2 = pretrain_stage2(cfg, init=s1["checkpoint"], golden=golden, synthetic=synthetic,
                         relations=semeval.relations, out_dir=tmp_path / "s2")
    assert s2["init"] == s1["checkpoint"] and s2["scl"] and s2["counts"]["synthetic"] == 20
    assert s2["train_texts"] == len(golden) + 20 - s2["skipped_total"] and s2["scl_skipped_examples"] >= 0
    h = s2["history"]
    assert all(m["train_scl_loss"] > 0 for m in h) and "heldout_scl_loss" in h[-1]
    assert s2["heldout_mslm_loss_after"] < s2["heldout_mslm_loss_before"]
    # stage 2 starts from stage 1: its starting held-out loss is far below stage 1's (random) start
    assert s2["heldout_mslm_loss_before"] < s1["heldout_mslm_loss_before"] - 0.5

    ckpt = s2["checkpoint"]
    model = AutoModelForMaskedLM.from_pretrained(ckpt)  # a plain HF checkpoint fine-tuning can load
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert model.config.hidden_size == 32 and tok.mask_token == "[MASK]"
    assert json.loads(open(os.path.join(ckpt, "tkre_scl_relations.json")).read()) == semeval.relations
    start = AutoModelForMaskedLM.from_pretrained(tiny_encoder_dir)
    assert not torch.equal(start.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)

    # resuming that run name with a different model is a clear error, not a silent restart
    from transformers import BertConfig, BertForMaskedLM

    other = tmp_path / "other_model"
    BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(TkreError, match="different model"):
        pretrain_stage1(cfg, init=str(other), golden=golden, explanations=None, out_dir=tmp_path / "s1")


def test_heldout_sample_is_a_seeded_capped_copy():
    from tkre.pretrain.stages import heldout_sample

    items = list(range(500))
    sample = heldout_sample(items, 0.1, 128, seed=3)
    assert len(sample) == 50 and sample == sorted(set(sample)) and set(sample) <= set(items)
    assert items == list(range(500))  # nothing removed from the training corpus
    assert sample == heldout_sample(items, 0.1, 128, seed=3) != heldout_sample(items, 0.1, 128, seed=4)
    assert len(heldout_sample(items, 0.5, 128, seed=3)) == 128  # the cap
    assert heldout_sample([7], 0.1, 128, seed=3) == [7] and len(heldout_sample(items[:4], 0.1, 128, 0)) == 1


def test_switched_off_stage_passes_its_init_on(tiny_encoder_dir, tmp_path):
    cfg = _cfg(tiny_encoder_dir)
    cfg.stage1 = StageConfig(enabled=False)
    s = pretrain_stage1(cfg, init=tiny_encoder_dir, golden=[], explanations=None, out_dir=tmp_path)
    assert s == {"stage": "stage1", "enabled": False, "init": tiny_encoder_dir, "checkpoint": tiny_encoder_dir}
    assert json.loads((tmp_path / "summary.json").read_text())["checkpoint"] == tiny_encoder_dir


def test_bad_inputs_are_clear_errors(semeval, tiny_encoder_dir, tmp_path):
    cfg = _cfg(tiny_encoder_dir)
    with pytest.raises(TkreError, match="empty corpus"):
        pretrain_stage1(cfg, init=tiny_encoder_dir, golden=[], explanations=[], out_dir=tmp_path / "a")
    golden = semeval.splits["train"][:5]
    with pytest.raises(TkreError, match=r"relation '.*' \(example .*\) is missing from the SCL anchor table"):
        pretrain_stage2(cfg, init=tiny_encoder_dir, golden=golden, synthetic=None, relations=["Other"],
                        out_dir=tmp_path / "b")
    with pytest.raises(TkreError, match="empty corpus after encoding"):  # every entity cut off
        pretrain_stage1(_cfg(tiny_encoder_dir).model_copy(update={"max_length": 8}), init=tiny_encoder_dir,
                        golden=[RelationExample("x", tuple(["w"] * 30 + ["a", "b"]), 30, 31, 31, 32, "Other")],
                        explanations=None, out_dir=tmp_path / "c")
    (tmp_path / "d").mkdir()
    with pytest.raises(TkreError, match="not a Hugging Face model folder"):
        pretrain_stage1(cfg, init=str(tmp_path / "d"), golden=golden, explanations=None, out_dir=tmp_path / "e")
    from tkre.errors import DataError
    with pytest.raises(DataError, match="field 'explanation'"):
        pretrain_stage1(cfg, init=tiny_encoder_dir, golden=golden, out_dir=tmp_path / "f",
                        explanations=[{"relation": "Other", "subject": "a", "object": "b", "explanation": ""}])


@pytest.mark.slow
def test_cli_pretrains_real_minilm_both_stages_on_semeval_8shot(tmp_path):
    """Done-when check: real MiniLM body (untrained MLM head), SemEval 8-shot, 2 Ray Train workers."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("pretrain:\n  encoder: embedded:minilm\n  max_length: 64\n"
                   "  stage1: {epochs: 2, lr: 1.0e-4, batch_size: 16}\n  stage2: {epochs: 2, lr: 5.0e-5, batch_size: 16}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tkre.cli", "pretrain", "--config", str(cfg), "--workers", "2",
                           "--dataset", "semeval", "--k", "8", "--seed", "1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s1 = json.loads((tmp_path / "out" / "stage1" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "out" / "stage2" / "summary.json").read_text())
    assert s1["heldout_mslm_loss_after"] < s1["heldout_mslm_loss_before"]
    assert s2["heldout_mslm_loss_after"] < s2["heldout_mslm_loss_before"]
    assert s2["init"] == s1["checkpoint"] and s2["fit"]["num_workers"] == 2
    assert str(tmp_path / "out" / "stage2" / "checkpoint") in proc.stdout

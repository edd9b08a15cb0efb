"""Fine-tuning's dev evaluation (every epoch) encodes the dev set once per worker, and scores exactly
what a fresh encoding would."""

from __future__ import annotations

import pickle

from tkre.finetune.evaluate import predict
from tkre.finetune.spec import FinetuneSpec
from tkre.finetune.task import FinetuneTask
from tkre.metrics import classification_scores


def test_dev_set_is_encoded_once_and_scored_as_before(tiny_encoder_dir, semeval, monkeypatch):
    dev = semeval.split("dev")[:40]
    spec = FinetuneSpec(backbone="typ_marker", relations=list(semeval.relations), no_relation=semeval.no_relation,
                        max_length=64, use_types=False)
    task = FinetuneTask(spec=spec, init_path=tiny_encoder_dir, train=dev[:8], dev=dev, eval_batch_size=16)
    model = task.build_model()
    preds, _, _ = predict(model, task.tokenizer, spec, dev, batch_size=16)
    fresh = classification_scores([ex.relation for ex in dev], preds, spec.no_relation)

    calls = []
    encode = FinetuneSpec.encode

    def counting(self, examples, tokenizer):
        calls.append(len(examples))
        return encode(self, examples, tokenizer)

    monkeypatch.setattr(FinetuneSpec, "encode", counting)
    first, second = task.evaluate(model, 1), task.evaluate(model, 2)
    assert calls == [len(dev)]
    assert first == second and first["dev_micro_f1"] == fresh["micro_f1"]
    assert pickle.loads(pickle.dumps(task))._dev_encoded is None  # rebuilt on the worker, not shipped

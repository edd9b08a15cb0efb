"""Fine-tuning end to end on local Ray: Ray Train through the shared loop (2 workers), best dev epoch,
test metrics, `evaluate_checkpoint` reproducing them (in process and through Ray Data), resume,
the CLI. Tiny encoder for the default tests; the real MiniLM runs are marked slow."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tkre.config import FinetuneConfig
from tkre.data import sample_kshot
from tkre.finetune import evaluate_checkpoint, run_finetune


@pytest.fixture(scope="module")
def small_split(semeval):
    split = sample_kshot(semeval, 2, 1)
    return split.train, split.dev[:60], split.test[:90]


def _cfg(encoder, **kw):
    base = dict(encoder=encoder, epochs=2, lr=1e-3, batch_size=8, resources={"num_workers": 2})
    base.update(kw)
    return FinetuneConfig(**base)


def test_typ_marker_two_workers_best_dev_epoch_and_reproducible_eval(ray_local, tiny_encoder_dir, semeval,
                                                                     small_split, tmp_path, caplog):
    train, dev, test = small_split
    out = tmp_path / "run"
    m = run_finetune(_cfg(tiny_encoder_dir), train=train, dev=dev, test=test, relations=semeval.relations,
                     no_relation=semeval.no_relation, out_dir=out, run_name="typ")
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["test_micro_f1"] == m["test_micro_f1"] and on_disk["f1_scale"] == "fraction"
    assert 0.0 <= m["test_micro_f1"] <= 1.0 and m["num_workers"] == 2
    assert [h["epoch"] for h in m["history"]] == [0, 1]
    best = max(m["history"], key=lambda h: h["dev_micro_f1"])
    assert m["dev_micro_f1"] == best["dev_micro_f1"]
    assert m["history"][m["best_epoch"]]["dev_micro_f1"] == best["dev_micro_f1"]
    # the budget and the steps it took: 2 epochs; best_epoch is 0-based, best_step the kept checkpoint's step
    assert m["budget"] == "2 epochs" and m["epochs_run"] == 2 and m["stopped_on_patience"] is False
    assert m["steps"] == m["history"][-1]["global_step"] == 2 * m["steps_per_epoch"]
    assert m["best_step"] == m["history"][m["best_epoch"]]["global_step"]
    assert m["history"][1]["train_loss"] < m["history"][0]["train_loss"]  # it learns something
    # K=2 leaves Entity-Destination(e2,e1) without a training example and most relations without dev
    assert "Entity-Destination(e2,e1)" in m["counts"]["relations_without_train_examples"]
    assert m["counts"]["relations_without_dev_examples"]
    assert "no dev example" in caplog.text
    preds = pq.read_table(out / "predictions.parquet").to_pylist()
    assert [p["id"] for p in preds] == [e.id for e in test]
    assert set(preds[0]) == {"id", "gold", "predicted", "score"}

    # the checkpoint alone reproduces the test figure, in process and through Ray Data actors
    again = evaluate_checkpoint(out / "checkpoint", test, tmp_path / "eval", relations=semeval.relations)
    assert again["test_micro_f1"] == m["test_micro_f1"] and again["inference"] == "in_process"
    via_ray = evaluate_checkpoint(out / "checkpoint", test, tmp_path / "eval_ray", ray_data_min_examples=0,
                                  actors=2)
    assert via_ray["inference"] == "ray_data"
    assert via_ray["test_micro_f1"] == pytest.approx(m["test_micro_f1"])
    ray_preds = pq.read_table(tmp_path / "eval_ray" / "predictions.parquet").to_pylist()
    assert [p["predicted"] for p in ray_preds] == [p["predicted"] for p in preds]

    # resume: the same run name continues after the last finished epoch instead of starting over
    m3 = run_finetune(_cfg(tiny_encoder_dir, epochs=3), train=train, dev=dev, test=test,
                      relations=semeval.relations, no_relation=semeval.no_relation, out_dir=out, run_name="typ")
    assert m3["resumed_from_epoch"] == 2
    assert [h["epoch"] for h in m3["history"]] == [0, 1, 2]
    assert m3["history"][0]["train_loss"] == m["history"][0]["train_loss"]


def test_genpt_one_worker_with_synthetic_cap(ray_local, tiny_encoder_dir, semeval, small_split, tmp_path):
    train, dev, test = small_split
    synthetic = [ex.__class__(**{**ex.to_dict(), "id": f"syn-{i}", "tokens": ex.tokens, "source": "synthetic:t"})
                 for i, ex in enumerate(train * 2)]
    m = run_finetune(_cfg(tiny_encoder_dir, backbone="genpt", epochs=1, synthetic_cap_per_relation=1,
                          eval_every_steps=3, resources={"num_workers": 1}),
                     train=train, dev=dev, test=test[:30], relations=semeval.relations,
                     no_relation=semeval.no_relation, synthetic=synthetic, out_dir=tmp_path / "g")
    assert m["backbone"] == "genpt" and m["best_epoch"] == 0
    n_rel_with_train = len({e.relation for e in train})
    # dev evaluated every 3 optimizer steps and after the last, inside the one epoch; the kept one is the best
    steps = math.ceil((len(train) + n_rel_with_train) / 8)
    assert [h["global_step"] for h in m["history"]] == [*range(3, steps, 3), steps] and m["steps"] == steps
    assert m["evaluations"] == len(m["history"]) and m["epochs_run"] == 1 and m["eval_every_steps"] == 3
    best = max(m["history"], key=lambda h: h["dev_micro_f1"])
    assert m["dev_micro_f1"] == best["dev_micro_f1"]
    assert [h["dev_micro_f1"] for h in m["history"] if h["global_step"] == m["best_step"]] == [best["dev_micro_f1"]]
    assert m["counts"]["synthetic_used"] == n_rel_with_train
    assert m["counts"]["train_examples"] == len(train) + n_rel_with_train
    spec = json.loads((tmp_path / "g" / "checkpoint" / "tkre_finetune.json").read_text())
    assert spec["backbone"] == "genpt" and spec["relations"] == semeval.relations


def test_init_from_pretraining_style_checkpoint_via_cli(ray_local, tiny_encoder_dir, semeval, tmp_path):
    """`--init` takes a plain HF masked-LM folder (what pre-training writes); evaluate reproduces."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    pre = tmp_path / "pretrained"
    tok = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    torch.manual_seed(3)
    BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=48)).save_pretrained(pre)
    tok.save_pretrained(pre)
    from typer.testing import CliRunner

    from tkre.cli import app

    from tkre.data import example_to_generic

    data_dir = tmp_path / "data"  # a small generic-JSONL dataset cut from SemEval
    data_dir.mkdir()
    for name, examples in (("train", semeval.split("train")[:300]), ("dev", semeval.split("dev")[:40]),
                           ("test", semeval.split("test")[:50])):
        (data_dir / f"{name}.jsonl").write_text("".join(json.dumps(example_to_generic(e)) + "\n" for e in examples))
    (data_dir / "relations.json").write_text(json.dumps(semeval.relations))
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("finetune:\n  lr: 0.001\n  batch_size: 8\n  eval_batch_size: 128\n")
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["finetune", "--backbone", "typ_marker", "--dataset", "jsonl", "--path", str(data_dir),
                                 "--k", "1", "--seed", "1", "--init", str(pre), "--epochs", "1", "--workers", "1",
                                 "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "fine-tuning: epoch 1/1" in r.output and "dev_micro_f1" in r.output  # the progress bar, fed by the train loop
    m = json.loads((out / "metrics.json").read_text())
    assert m["init"] == str(pre) and m["f1_scale"] == "fraction" and m["best_epoch"] == 0
    assert m["data"]["k"] == 1
    from safetensors.torch import load_file

    weights = load_file(out / "checkpoint" / "model.safetensors")
    assert weights["encoder.layer.0.attention.self.query.weight"].shape == (32, 32)  # 1-layer init kept
    assert not any(k.startswith("encoder.layer.1.") for k in weights)
    r = CliRunner().invoke(app, ["evaluate", str(out / "checkpoint"), "--dataset", "jsonl", "--path", str(data_dir),
                                 "--split", "test",
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test_micro_f1"] == m["test_micro_f1"]


def test_evaluate_rejects_checkpoint_with_other_label_set(tiny_encoder_dir, semeval, tmp_path):
    from tkre.errors import ConfigError
    from tkre.finetune.inputs import load_tokenizer
    from tkre.finetune.spec import FinetuneSpec

    tok = load_tokenizer(tiny_encoder_dir)
    spec = FinetuneSpec("typ_marker", semeval.relations[:5], semeval.no_relation, 64, False)
    spec.save(spec.build_model(tiny_encoder_dir, tok), str(tmp_path / "ck"), tok)
    with pytest.raises(ConfigError, match="different label set"):
        evaluate_checkpoint(tmp_path / "ck", semeval.split("test")[:5], tmp_path / "o", relations=semeval.relations)


# ------------------------------------------------------------------------------------ slow: real MiniLM

def _cli(args, env_extra=None):
    env = {**os.environ, "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return [sys.executable, "-m", "tkre.cli", *args], env


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["typ_marker", "genpt"])
def test_real_minilm_semeval_8shot_beats_constant_baselines(backbone, tmp_path):
    """Golden-only SemEval 8-shot seed 1, 2 workers, real MiniLM encoder (minutes on CPU)."""
    cmd, env = _cli(["finetune", "--backbone", backbone, "--dataset", "semeval", "--k", "8", "--seed", "1",
                     "--workers", "2", "--epochs", "12", "--lr", "1e-4", "--batch-size", "16", "--max-length", "128",
                     "--out", str(tmp_path / backbone)])  # the paper's lr 3e-5 x 10 epochs barely moves MiniLM
    subprocess.run(cmd, env=env, check=True, timeout=3600)
    m = json.loads((tmp_path / backbone / "metrics.json").read_text())
    base = m["baselines"]
    assert base["majority_class"]["micro_f1"] == 0.0  # SemEval's majority class is Other
    if backbone == "typ_marker":
        # measured: 0.300 vs 0.117 for always the most frequent non-Other class
        assert m["test_micro_f1"] > 2 * base["most_frequent_non_no_relation"]["micro_f1"]
    else:  # MiniLM ships without its MLM head: GenPT must run the same way, quality is not claimed
        assert 0.0 <= m["test_micro_f1"] <= 1.0


@pytest.mark.slow
def test_killed_cli_run_resumes_from_last_epoch(tmp_path, tiny_encoder_dir):
    """SIGKILL a `tkre finetune` process after its first checkpoint; the same command resumes."""
    out = tmp_path / "killed"
    args = ["finetune", "--k", "4", "--seed", "1", "--init", tiny_encoder_dir, "--epochs", "6", "--workers", "1",
            "--run-name", "killme", "--out", str(out)]
    cmd, env = _cli(args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_dir = out / "ray_runs" / "killme"
    deadline = time.time() + 600
    while time.time() < deadline and not list(run_dir.glob("epoch_*/COMPLETE")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.parent.name for p in run_dir.glob("epoch_*/COMPLETE"))
    assert done, "no checkpoint before the kill"
    assert not (out / "metrics.json").exists()
    subprocess.run(cmd, env=env, check=True, timeout=1200)
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from_epoch"] is not None and m["resumed_from_epoch"] >= 1
    assert [h["epoch"] for h in m["history"]] == list(range(6))

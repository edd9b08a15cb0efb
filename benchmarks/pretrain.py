"""Pre-training throughput: tkre's Ray Train loop vs a plain Hugging Face `Trainer`, and 2 workers vs 1.

Same model (MSLM head on the embedded MiniLM by default), same masked data (tkre's MSLM dataset and
collate on SemEval train sentences), same batch size, AdamW + linear schedule + grad clipping on
both sides.

  hf_trainer     one process, transformers.Trainer, torch threads = all cores
  tkre_1_worker  tkre.train_loop.fit, 1 Ray Train worker reserving all cores
  tkre_2_workers tkre.train_loop.fit, 2 workers (DDP, gloo), the cores split between them

Steady state, Ray start-up excluded: each run trains `--epochs` epochs and the first is not timed;
the others are timed inside the training loop on both sides (tkre: the worker's own timer over its
training batches, reported as samples_per_s; HF: a TrainerCallback timing on_epoch_begin ->
on_epoch_end). Worker start-up, model loading, the first epoch (warm-up), evaluation and checkpoint
writing are outside the timed windows on both sides.

This VM's speed drifts by 10-20 % over minutes (the same matmul loop measured 26 to 40 it/s within a
quarter of an hour), more than the gap being measured, so the two sides take turns: `--rounds`
rounds of one HF Trainer run and one tkre 1-worker run, in alternating order (HF first in odd rounds,
tkre first in even ones, so a steady drift does not favour either side), each round's ratio of the
median epoch rates. ratio_vs_hf_trainer is the median of the rounds' ratios (all of them are
printed); ratio_ci95 is a 95 % confidence interval of their geometric mean (Student's t over the
rounds' log ratios): when it holds 1.0, this run cannot tell the two apart. Ray is started for each
tkre run and shut down after it, so the HF runs never share the machine with an idle Ray.
Last stdout line: one JSON object.

    python benchmarks/pretrain.py [--rounds 5] [--epochs 3] [--examples 512] [--batch-size 16] [--max-length 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_task(encoder: str, n_examples: int, max_length: int, seed: int):
    from transformers import AutoTokenizer

    from tkre.data import load_dataset
    from tkre.pretrain.data import MaskingSettings, encode_corpus, from_examples
    from tkre.pretrain.masking import MaskingProbabilities
    from tkre.pretrain.model import check_init_dir
    from tkre.pretrain.task import PretrainTask

    path = check_init_dir(encoder)
    tok = AutoTokenizer.from_pretrained(path)
    examples = load_dataset("semeval").splits["train"][: n_examples + 16]
    items, _ = encode_corpus(tok, from_examples(examples), max_length=max_length)
    masking = MaskingSettings(masking="mslm", probs=MaskingProbabilities(), bert_rate=0.15,
                              mask_token_id=tok.mask_token_id, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                              seed=seed)
    return PretrainTask(init_path=path, train_items=items[:n_examples], heldout_items=items[n_examples:],
                        masking=masking)


def run_hf_trainer(task, *, batch_size: int, lr: float, cores: int, epochs: int) -> list[float]:
    """samples/s of epochs 2.. with transformers.Trainer (single process)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    torch.set_num_threads(cores)
    dataset = task.train_dataset()
    times: dict[int, float] = {}

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            dataset.set_epoch(int(round(state.epoch or 0)))
            times[-1] = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kw):
            times[int(round(state.epoch)) - 1] = time.perf_counter() - times[-1]

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                                 learning_rate=lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
                                 max_grad_norm=1.0, logging_steps=10, save_strategy="no", report_to=[],
                                 use_cpu=True, dataloader_num_workers=0, seed=42, disable_tqdm=True)
        trainer = Trainer(model=task.build_model(), args=args, train_dataset=dataset, data_collator=task.collate,
                          callbacks=[EpochTimer()])
        trainer.train()
    return [len(dataset) / times[e] for e in range(1, epochs)]


def run_tkre(task, *, batch_size: int, lr: float, workers: int, cpus_per_worker: float, cores: int,
             epochs: int) -> list[float]:
    """samples/s of epochs 2.. with tkre.train_loop.fit on a Ray started for this run only."""
    import ray

    from tkre.config import ResourcesConfig
    from tkre.train_loop import LoopSettings, fit

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    settings = LoopSettings(epochs=epochs, lr=lr, batch_size=batch_size, warmup_ratio=0.1, weight_decay=0.01,
                            seed=42, log_every=10_000)
    try:
        with tempfile.TemporaryDirectory() as storage:
            result = fit(task, settings, ResourcesConfig(num_workers=workers, cpus_per_worker=cpus_per_worker),
                         run_name=f"bench_{workers}w", storage_path=storage)
    finally:
        ray.shutdown()
    return [m["samples_per_s"] for m in result.metrics_history[1:]]


def geometric_mean_ci95(ratios: list[float]) -> tuple[float, float | None, float | None]:
    """(geometric mean, 95 % CI low, high) of per-round ratios: the report's t-interval
    (`tkre.report.paired.mean_ci95`) over their logs (no CI below 2 rounds)."""
    import math

    from tkre.report.paired import mean_ci95

    logs = [math.log(x) for x in ratios]
    ci = mean_ci95(logs)
    low, high = (math.exp(ci[0]), math.exp(ci[1])) if ci else (None, None)
    return math.exp(sum(logs) / len(logs)), low, high


def main() -> None:
    from statistics import median

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="embedded:minilm")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=5, help="turns of HF Trainer and tkre 1 worker")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    a = p.parse_args()
    if a.epochs < 2 or a.rounds < 1:
        p.error("--epochs must be >= 2 (the first is not timed) and --rounds >= 1")
    logging.basicConfig(level=logging.WARNING)

    task = build_task(a.encoder, a.examples, a.max_length, seed=42)
    common = {"batch_size": a.batch_size, "lr": a.lr, "epochs": a.epochs}
    hf_all, one_all, ratios = [], [], []
    for r in range(a.rounds):
        if r % 2 == 0:
            hf = run_hf_trainer(task, cores=a.cores, **common)
            one = run_tkre(task, workers=1, cpus_per_worker=a.cores, cores=a.cores, **common)
        else:
            one = run_tkre(task, workers=1, cpus_per_worker=a.cores, cores=a.cores, **common)
            hf = run_hf_trainer(task, cores=a.cores, **common)
        ratios.append(median(one) / median(hf))
        hf_all += hf
        one_all += one
        print(f"round {r + 1}: hf_trainer {' '.join(f'{v:.2f}' for v in hf)} | tkre_1_worker "
              f"{' '.join(f'{v:.2f}' for v in one)} samples/s -> ratio {ratios[-1]:.3f}", flush=True)
    geo, lo, hi = geometric_mean_ci95(ratios)
    print(f"ratio over {len(ratios)} rounds: median {median(ratios):.3f}, geometric mean {geo:.3f}"
          + (f", 95 % CI [{lo:.3f}, {hi:.3f}]" if lo is not None else ""), flush=True)
    two = run_tkre(task, workers=2, cpus_per_worker=a.cores / 2, cores=a.cores, **common)
    print(f"tkre_2_workers {' '.join(f'{v:.2f}' for v in two)} samples/s", flush=True)
    print(json.dumps({
        "ratio_vs_hf_trainer": round(median(ratios), 3), "round_ratios": [round(x, 3) for x in ratios],
        "ratio_geomean": round(geo, 3), "ratio_ci95": [round(lo, 3), round(hi, 3)] if lo is not None else None,
        "scaling_2_vs_1": round(median(two) / median(one_all[-len(two):]), 3),
        "hf_trainer_samples_per_s": round(median(hf_all), 2), "tkre_1_worker_samples_per_s": round(median(one_all), 2),
        "tkre_2_workers_samples_per_s": round(median(two), 2), "cores": a.cores, "rounds": a.rounds,
        "epochs": a.epochs, "examples": a.examples, "batch_size": a.batch_size, "max_length": a.max_length,
        "encoder": a.encoder,
        "timed": "epochs 2.. inside the loop, medians; Ray start-up, model load, epoch 1, eval, checkpoints excluded",
    }))


if __name__ == "__main__":
    main()

"""Pre-training throughput: tkre's Ray Train loop vs a plain Hugging Face `Trainer`, and 2 workers vs 1.

Same model (MSLM head on the embedded MiniLM by default), same masked data (tkre's MSLM dataset and
collate on SemEval train sentences), same batch size, AdamW + linear schedule + grad clipping on
both sides.

  hf_trainer     one process, transformers.Trainer, torch threads = all cores
  tkre_1_worker  tkre.train_loop.fit, 1 Ray Train worker reserving all cores
  tkre_2_workers tkre.train_loop.fit, 2 workers (DDP, gloo), the cores split between them

Steady state, Ray start-up excluded: each run trains 2 epochs and only the second epoch is timed,
inside the training loop on both sides (tkre: the worker's own epoch timer, reported as
samples_per_s; HF: a TrainerCallback timing on_epoch_begin -> on_epoch_end). Worker start-up,
model loading, the first epoch (warm-up), evaluation and checkpoint writing are outside the timed
window on both sides. Last stdout line: one JSON object.

    python benchmarks/pretrain.py [--examples 512] [--batch-size 16] [--max-length 64]
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


def run_hf_trainer(task, *, batch_size: int, lr: float, cores: int) -> float:
    """samples/s of the second epoch with transformers.Trainer (single process)."""
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
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=2,
                                 learning_rate=lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
                                 max_grad_norm=1.0, logging_steps=10, save_strategy="no", report_to=[],
                                 use_cpu=True, dataloader_num_workers=0, seed=42, disable_tqdm=True)
        trainer = Trainer(model=task.build_model(), args=args, train_dataset=dataset, data_collator=task.collate,
                          callbacks=[EpochTimer()])
        trainer.train()
    return len(dataset) / times[1]


def run_tkre(task, *, batch_size: int, lr: float, workers: int, cpus_per_worker: float, storage: str) -> dict:
    from tkre.config import ResourcesConfig
    from tkre.train_loop import LoopSettings, fit

    settings = LoopSettings(epochs=2, lr=lr, batch_size=batch_size, warmup_ratio=0.1, weight_decay=0.01, seed=42,
                            log_every=10_000)
    t0 = time.perf_counter()
    result = fit(task, settings, ResourcesConfig(num_workers=workers, cpus_per_worker=cpus_per_worker),
                 run_name=f"bench_{workers}w_{time.time_ns()}", storage_path=storage)
    wall = time.perf_counter() - t0
    return {"samples_per_s": result.metrics_history[1]["samples_per_s"],
            "first_epoch_samples_per_s": result.metrics_history[0]["samples_per_s"], "wall_s_incl_startup": wall}


def main() -> None:
    import ray

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="embedded:minilm")
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    task = build_task(a.encoder, a.examples, a.max_length, seed=42)
    hf = run_hf_trainer(task, batch_size=a.batch_size, lr=a.lr, cores=a.cores)
    print(f"hf_trainer      {hf:8.2f} samples/s (epoch 2, {a.cores} threads)", flush=True)

    ray.init(num_cpus=a.cores, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    with tempfile.TemporaryDirectory() as storage:
        one = run_tkre(task, batch_size=a.batch_size, lr=a.lr, workers=1, cpus_per_worker=a.cores, storage=storage)
        print(f"tkre_1_worker   {one['samples_per_s']:8.2f} samples/s (epoch 2; wall incl. Ray start-up "
              f"{one['wall_s_incl_startup']:.1f} s)", flush=True)
        two = run_tkre(task, batch_size=a.batch_size, lr=a.lr, workers=2, cpus_per_worker=a.cores / 2, storage=storage)
        print(f"tkre_2_workers  {two['samples_per_s']:8.2f} samples/s (epoch 2; wall incl. Ray start-up "
              f"{two['wall_s_incl_startup']:.1f} s)", flush=True)
    ray.shutdown()
    print(json.dumps({
        "ratio_vs_hf_trainer": round(one["samples_per_s"] / hf, 3),
        "scaling_2_vs_1": round(two["samples_per_s"] / one["samples_per_s"], 3),
        "hf_trainer_samples_per_s": round(hf, 2), "tkre_1_worker_samples_per_s": round(one["samples_per_s"], 2),
        "tkre_2_workers_samples_per_s": round(two["samples_per_s"], 2), "cores": a.cores,
        "examples": a.examples, "batch_size": a.batch_size, "max_length": a.max_length, "encoder": a.encoder,
        "timed": "second epoch only, inside the loop (Ray start-up, model load, epoch 1, eval, checkpoints excluded)",
    }))


if __name__ == "__main__":
    main()

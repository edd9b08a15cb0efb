"""Fine-tuning throughput: tkre's path vs a plain single-process PyTorch loop, same model and data.

Train: tkre = Ray Train through tkre.train_loop.fit (N workers sharing the cores; DDP/gloo for N > 1) with the
FinetuneTask; plain = one process, torch with N threads, DataLoader(shuffle) + AdamW, same batch
size, same encoded items. samples/s is measured inside the epochs (the loop's own counter for
tkre; the same span for plain); the end-to-end wall time including Ray start-up is printed too.
Eval: tkre = finetune.evaluate.predict (length-sorted batches, inference_mode); plain = the same
items in file order through a DataLoader under no_grad. Same batch size and threads; both timings
include tokenisation.

    python benchmarks/finetune.py [--encoder embedded:minilm] [--backbone typ_marker] [--epochs 3]

Last stdout line: JSON with train_ratio_vs_plain_loop and eval_ratio_vs_plain_loop (tkre / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_train(task, epochs: int, batch_size: int, lr: float, threads: int) -> tuple[float, float]:
    """(samples/s inside the epochs, wall seconds) of a textbook single-process loop."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t_wall = time.perf_counter()
    model = task.build_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loader = DataLoader(task.train_dataset(), batch_size=batch_size, shuffle=True, collate_fn=task.collate)
    n, t_train = 0, 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        for batch in loader:
            loss = model(**batch)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += batch["input_ids"].shape[0]
        t_train += time.perf_counter() - t0
    return n / t_train, time.perf_counter() - t_wall


def plain_eval(model, task, examples, batch_size: int, threads: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from tkre.finetune.evaluate import INPUT_KEYS

    torch.set_num_threads(threads)
    t0 = time.perf_counter()  # tokenisation counts for both paths
    items, _ = task.spec.encode(examples, task.tokenizer)
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(items, batch_size=batch_size, collate_fn=task.collate):
            model(**{k: v for k, v in batch.items() if k in INPUT_KEYS})["scores"].argmax(-1).tolist()
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="embedded:minilm")
    ap.add_argument("--backbone", default="typ_marker", choices=["typ_marker", "genpt"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="Ray Train workers (the cores are split between them)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores for both sides")
    ap.add_argument("--eval-examples", type=int, default=1024)
    args = ap.parse_args()

    import ray
    import torch

    from tkre.config import ResourcesConfig
    from tkre.data import load_dataset, sample_kshot
    from tkre.finetune.evaluate import predict
    from tkre.finetune.spec import FinetuneSpec
    from tkre.finetune.task import FinetuneTask
    from tkre.model_sources import resolve_encoder
    from tkre.train_loop import LoopSettings, fit

    ds = load_dataset("semeval")
    split = sample_kshot(ds, 8, 1)
    spec = FinetuneSpec(args.backbone, ds.relations, ds.no_relation, 128, False)
    task = FinetuneTask(spec=spec, init_path=resolve_encoder(args.encoder), train=split.train * 2, dev=[], seed=0)
    test = split.test[:args.eval_examples]
    threads = args.cpus  # the plain loop gets the same CPUs as the Ray workers together

    # ---- train: plain
    plain_sps, plain_wall = plain_train(task, args.epochs, args.batch_size, 3e-5, threads)
    print(f"train plain loop : {plain_sps:8.1f} samples/s  ({plain_wall:.1f} s wall, {threads} threads)")

    # ---- train: tkre (Ray Train through the shared loop)
    ray.init(address=os.environ.get("RAY_ADDRESS", "local"), num_cpus=args.cpus, include_dashboard=False,
             log_to_driver=False)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        res = fit(task, LoopSettings(epochs=args.epochs, lr=3e-5, batch_size=args.batch_size, seed=0),
                  ResourcesConfig(num_workers=args.workers, cpus_per_worker=args.cpus / args.workers),
                  run_name="bench", storage_path=storage)
        tkre_wall = time.perf_counter() - t0
        hist = res.metrics_history
        steady = hist[1:] or hist  # the first epoch includes DDP/gloo warm-up
        tkre_sps = sum(h["samples_per_s"] for h in steady) / len(steady)
        model = spec.build_model(task.init_path, task.tokenizer)
        model.load_state_dict(torch.load(os.path.join(os.path.dirname(res.best_checkpoint_dir), "train_state.pt"),
                                         weights_only=False)["model"])
    ray.shutdown()
    print(f"train tkre Ray   : {tkre_sps:8.1f} samples/s  ({tkre_wall:.1f} s wall incl. Ray start-up, "
          f"{args.workers} worker(s), {args.cpus} CPUs)")

    # ---- eval
    torch.set_num_threads(threads)
    plain_eps = plain_eval(model, task, test, 64, threads)
    t0 = time.perf_counter()
    predict(model, task.tokenizer, spec, test, batch_size=64)
    tkre_eps = len(test) / (time.perf_counter() - t0)
    print(f"eval plain loop  : {plain_eps:8.1f} examples/s")
    print(f"eval tkre predict: {tkre_eps:8.1f} examples/s")
    print(json.dumps({
        "encoder": args.encoder, "backbone": args.backbone, "train_examples": len(task.train),
        "epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers, "cpus": args.cpus,
        "eval_examples": len(test), "train_samples_per_s_tkre": round(tkre_sps, 2),
        "train_samples_per_s_plain": round(plain_sps, 2), "train_wall_s_tkre": round(tkre_wall, 1),
        "train_wall_s_plain": round(plain_wall, 1), "eval_examples_per_s_tkre": round(tkre_eps, 2),
        "eval_examples_per_s_plain": round(plain_eps, 2),
        "train_ratio_vs_plain_loop": round(tkre_sps / plain_sps, 3),
        "eval_ratio_vs_plain_loop": round(tkre_eps / plain_eps, 3),
    }))


if __name__ == "__main__":
    main()

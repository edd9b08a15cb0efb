"""The one Ray Train loop tkre trains with (pre-training and fine-tuning alike).

Everything method-specific lives in a `TrainTask` (model, data, loss, evaluation, saving); this
module owns the generic part and is meant to be read top to bottom in `_train_worker`:

  Ray Train v2 `TorchTrainer` -> one worker per `ResourcesConfig.num_workers`, each reserving
  `cpus_per_worker` CPUs (and `threads` torch threads, by default as many) -> DDP through
  `ray.train.torch.prepare_model` / `prepare_data_loader` (gloo on CPU, nccl on GPU) -> AdamW with
  weight decay grouped as the HF `Trainer` does, transformers' linear warm-up/decay schedule,
  gradient accumulation, bf16/fp16 autocast on GPU only -> per-step metrics logged on rank 0, and
  progress events to `tkre.progress`'s current channel (sweep lines, CLI bars) -> after every epoch,
  or every `eval_every_steps` optimizer steps: `task.evaluate` on rank 0 and one
  `ray.train.report(metrics, checkpoint)` -> the best checkpoint by `select_metric` through Ray's
  `Result.get_best_checkpoint`. The budget: `epochs`, or `max_steps` optimizer steps (the last epoch
  partial), and `patience` stops once `select_metric` has not improved for that many evaluations
  (rank 0 decides, every rank stops). When to evaluate, stop and resume: `tkre.loop_schedule`.

Checkpoints hold the HF model written by `task.save` (`model/`), the raw model, optimizer and
scheduler state, the epoch and how many of its micro-batches were done, the global step, the RNG
state and the metrics history (`train_state.pt`). They are written to a temporary directory first
and only then reported, so a checkpoint in storage is complete or absent (Ray registers it in its
snapshot only after the upload finished). A `COMPLETE` marker is checked again before resuming.

Resume: a new `fit` call with the same `run_name` and `storage_path` (or an automatic retry under
`max_failures`) finds the latest checkpoint through `ray.train.get_checkpoint()` and continues where
it was written: at the next epoch, or inside an epoch after the batches it had trained (they are
drawn again and skipped, then the saved RNG state is restored). Every epoch reseeds
torch/numpy/random (`transformers.set_seed`) with (seed, epoch, rank) and the sampler with (seed,
epoch), evaluation leaves the RNG state as it found it, and the scheduler's state is restored with
the optimizer's, so a resumed run takes exactly the steps an uninterrupted run takes, and the
evaluation schedule does not change the training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from tkre import progress
from tkre.config import ResourcesConfig
from tkre.errors import ConfigError, TkreError
from tkre.cluster.runtime import init_ray
from tkre.store.refs import CheckpointDir, materialise
from tkre.loop_schedule import (evaluates_after_step, evaluates_at_epoch_end, out_of_patience, planned_steps,
                                 resume_point)

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
STATE_FILE = "train_state.pt"
COMPLETE_MARKER = "COMPLETE"
PROGRESS_EVERY_S = 5.0  # at most one progress event per this many seconds within an epoch (rank 0)
SHOWN_METRICS = ("train_loss", "dev_micro_f1", "heldout_mslm_loss", "heldout_scl_loss")
#: parameter-name patterns without weight decay (what `transformers.Trainer.get_decay_parameter_names` uses)
DECAY_EXCLUDED_NAMES = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


@runtime_checkable
class TrainTask(Protocol):
    """What a training method supplies. Must be picklable: it is shipped to and built on workers."""

    def build_model(self) -> torch.nn.Module:
        """A fresh model on CPU (weights loaded from wherever the task starts)."""

    def train_dataset(self) -> torch.utils.data.Dataset:
        """Map-style dataset; items are dicts of tensors/ints. If it has `set_epoch(epoch)`, the loop
        calls it before every epoch (e.g. to redraw masks deterministically)."""

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        """Items -> one batch of tensors. A batch with `attention_mask` gets tokens/s logged."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to back-propagate, named float parts to log). `model` may be DDP-wrapped: call it,
        reach its submodules through `unwrap(model)`."""

    def evaluate(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """Called on rank 0 only, after each epoch, with the unwrapped model in eval mode under
        `torch.no_grad()`. Returned keys are reported (e.g. `dev_micro_f1`, `heldout_mslm_loss`)."""

    def save(self, model: torch.nn.Module, directory: str) -> None:
        """Write the unwrapped model as a plain HF checkpoint (plus any extra files) to `directory`."""


@dataclass
class LoopSettings:
    """Optimisation settings. `batch_size` is the micro-batch summed over all workers (each worker
    gets batch_size // num_workers); one optimizer step sees batch_size * grad_accum examples."""

    epochs: int
    lr: float
    batch_size: int
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    seed: int = 42
    select_metric: str | None = None          # None: the last epoch is "best"
    select_mode: Literal["max", "min"] = "max"
    mixed_precision: bool | None = None       # None: on when training on GPU; never on CPU
    max_grad_norm: float | None = 1.0
    log_every: int = 10                       # optimizer steps between per-step log lines
    keep_checkpoints: int = 1                 # best kept by select_metric; the latest is always kept
    max_steps: int | None = None              # a budget in optimizer steps instead of `epochs` (last epoch partial)
    patience: int | None = None               # stop after this many evaluations without a better select_metric
    eval_every_steps: int | None = None       # evaluate (and checkpoint) every this many optimizer steps and
                                              # after the last; None: at the end of every epoch


@dataclass
class FitResult:
    best_checkpoint_dir: str                  # local folder of the HF model (task.save output)
    metrics_history: list[dict[str, Any]]     # one dict per epoch, as reported by rank 0
    summary: dict[str, Any] = field(default_factory=dict)
    best_model: Any = None  # best_checkpoint_dir as a reference any node can open (CheckpointDir)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


def decay_parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the HF `Trainer` builds them: no weight decay on biases and LayerNorm/RMSNorm
    weights (`Trainer.get_decay_parameter_names`' rule, through transformers' `get_parameter_names`)."""
    from transformers.trainer_pt_utils import get_parameter_names

    decay_names = set(get_parameter_names(model, [torch.nn.LayerNorm], DECAY_EXCLUDED_NAMES))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if n in decay_names], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0}]


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])


def fit(task: TrainTask, settings: LoopSettings, resources: ResourcesConfig, *, run_name: str,
        storage_path: str, callbacks: list | None = None, max_failures: int = 0) -> FitResult:
    """Train `task` on Ray Train; resume the run `storage_path/run_name` if it has a checkpoint.

    `callbacks` go to `RunConfig(callbacks=...)` (e.g. Ray Tune's `TuneReportCallback()`).
    `max_failures` retries failed attempts from the latest checkpoint within this call."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if settings.epochs < 1 or settings.batch_size < 1 or settings.grad_accum < 1 or (settings.max_steps or 1) < 1:
        raise ConfigError(f"epochs, batch_size, grad_accum and max_steps must be >= 1, got {settings}")
    if settings.patience is not None and not settings.select_metric:
        raise ConfigError("patience (training to convergence) needs a select_metric to watch (a dev set)")
    if settings.batch_size < resources.num_workers:
        raise ConfigError(f"batch_size {settings.batch_size} is smaller than num_workers {resources.num_workers}")
    if "://" not in storage_path:
        storage_path = os.path.abspath(os.path.expanduser(storage_path))
    init_ray()

    score = settings.select_metric or "global_step"
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"task": task, "settings": settings, "resources": resources,
                           "progress": progress.current()},
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                              resources_per_worker=resources.per_worker()),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, callbacks=list(callbacks or []),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=settings.keep_checkpoints, checkpoint_score_attribute=score,
                checkpoint_score_order=settings.select_mode if settings.select_metric else "max")),
    )
    try:
        result = trainer.fit()  # raises ray.train.TrainingFailedError when the attempts are used up
    except ray.train.TrainingFailedError as e:  # a user mistake on a worker stays a one-line TkreError
        for exc in (getattr(e, "worker_failures", None) or {}).values():
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, TkreError):
                raise TkreError(f"run '{run_name}': {cause}") from e
        raise

    out = result.return_value or {}
    history = out.get("history", [])
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None]
    if not candidates:
        raise TkreError(f"run {run_name} finished without a checkpoint in {result.path}")
    metric, mode = (settings.select_metric, settings.select_mode) if settings.select_metric else ("global_step", "max")
    missing = [m.get("epoch") for _, m in candidates if metric not in m]
    if missing:
        raise ConfigError(f"select_metric '{metric}' is not among the reported metrics "
                          f"(epochs {missing}); evaluate() returned {sorted(candidates[0][1])}")
    best_ckpt = result.get_best_checkpoint(metric, mode)
    best_metrics = next(m for c, m in candidates if c.path == best_ckpt.path)
    best_model = CheckpointDir(best_ckpt, MODEL_SUBDIR, COMPLETE_MARKER)
    best_dir = materialise(best_model)  # downloaded into this node's cache when storage is remote
    summary = {
        "run_path": result.path, "best_epoch": best_metrics.get("epoch"),
        "best_metric": best_metrics.get(settings.select_metric) if settings.select_metric else None,
        "select_metric": settings.select_metric, "global_step": out.get("global_step"),
        "best_step": best_metrics.get("global_step"), "stopped_on_patience": out.get("stopped_on_patience"),
        "total_steps": out.get("total_steps"), "steps_per_epoch": out.get("steps_per_epoch"),
        "resumed_from_epoch": out.get("resumed_from_epoch"), "resumed_from_step": out.get("resumed_from_step"),
        "num_workers": resources.num_workers,
        "settings": asdict(settings),
    }
    return FitResult(best_checkpoint_dir=best_dir, best_model=best_model, metrics_history=history, summary=summary)


def _train_worker(config: dict) -> dict:
    """Runs on every Ray Train worker. Readable top to bottom: setup, resume, epochs, report."""
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader, DistributedSampler
    from transformers import get_linear_schedule_with_warmup, set_seed

    task: TrainTask = config["task"]
    s: LoopSettings = config["settings"]
    res: ResourcesConfig = config["resources"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    channel: progress.Channel | None = config["progress"] if rank == 0 else None  # live progress (sweeps, CLI)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(res.torch_threads())  # this worker's CPU share
    device = ray.train.torch.get_device()
    set_seed(s.seed + rank)

    # ---- model and data
    model = task.build_model()
    dataset = task.train_dataset()
    if len(dataset) == 0:
        raise TkreError("the training dataset is empty")
    per_worker_batch = max(1, s.batch_size // world)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=s.seed)
    loader = DataLoader(dataset, batch_size=per_worker_batch, sampler=sampler, collate_fn=task.collate)
    loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)  # moves batches to device
    micro_per_epoch = len(loader)
    steps_per_epoch = math.ceil(micro_per_epoch / s.grad_accum)
    epochs, total_steps = planned_steps(s, steps_per_epoch)  # a step budget sets the epochs, else the reverse
    warmup_steps = int(round(s.warmup_ratio * total_steps))

    # ---- resume: weights before DDP wrapping, optimizer/scheduler after
    start_epoch, skip_micro, global_step, history, state = 0, 0, 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if not os.path.isfile(os.path.join(d, COMPLETE_MARKER)):
                raise TkreError(f"checkpoint {checkpoint.path} is incomplete (no {COMPLETE_MARKER} marker)")
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:  # missing/unexpected keys or shape mismatch
            raise TkreError(f"checkpoint {checkpoint.path} of run '{ctx.get_experiment_name()}' was written by a "
                            f"different model, cannot resume: {str(e)[:300]} -- use another run name or "
                            f"delete that run folder") from None
        start_epoch, skip_micro = resume_point(state, micro_per_epoch)
        global_step, history = state["global_step"], state["history"]
        if rank == 0:
            logger.info("resuming %s at epoch %d (step %d)", ctx.get_experiment_name(), start_epoch, global_step)
    model = ray.train.torch.prepare_model(model)  # DDP when world > 1; moves to device
    try:  # the fused kernel (what HF Trainer uses by default) where the device has one
        optimizer = torch.optim.AdamW(decay_parameter_groups(model, s.weight_decay), lr=s.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(decay_parameter_groups(model, s.weight_decay), lr=s.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    use_amp = device.type == "cuda" and (s.mixed_precision if s.mixed_precision is not None else res.use_gpu)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])

    def evaluate_and_report(epoch: int, micro_done: int) -> bool:
        """Dev evaluation (rank 0), one `ray.train.report` with a checkpoint; True when out of patience."""
        metrics: dict[str, Any] = {f"train_{k}": v / max(1, win["micro"]) for k, v in win["sums"].items()}
        seconds = time.perf_counter() - win["t0"]
        counts = _all_reduce_sum([win["samples"], win["tokens"]], world, device)
        metrics.update(epoch=epoch, global_step=global_step, train_seconds=seconds, lr=scheduler.get_last_lr()[0],
                       samples_per_s=counts[0] / max(seconds, 1e-9), tokens_per_s=counts[1] / max(seconds, 1e-9))
        if rank == 0:
            rng = _rng_state()  # evaluating never changes the training that follows it
            model.eval()
            with torch.no_grad():
                metrics.update(task.evaluate(unwrap(model), epoch))
            model.train()
            _set_rng_state(rng)
            history.append(dict(metrics))
            if channel is not None:
                channel.send(unit="step", done=global_step, total=total_steps, epoch=epoch + 1, epochs=epochs,
                             epoch_end=True, info={k: v for k, v in metrics.items() if k in SHOWN_METRICS})
            with tempfile.TemporaryDirectory(prefix="tkre-ckpt-") as tmp:
                task.save(unwrap(model), os.path.join(tmp, MODEL_SUBDIR))
                torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                            "epoch": epoch, "micro_done": micro_done, "global_step": global_step,
                            "history": history, "rng": rng}, os.path.join(tmp, STATE_FILE))
                Path(tmp, COMPLETE_MARKER).write_text(json.dumps({"epoch": epoch, "global_step": global_step}))
                name = f"epoch_{epoch:04d}" if evaluates_at_epoch_end(s) else f"step_{global_step:06d}"
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        else:
            history.append(dict(metrics))
            ray.train.report(metrics)
        win.update(sums={}, samples=0, tokens=0, micro=0, t0=time.perf_counter())
        return _rank0_says(out_of_patience(history, s), rank, world, device)  # rank 0 holds dev micro-F1

    # ---- epochs (until the budget is spent, or `patience` evaluations pass without a better select_metric)
    win: dict[str, Any] = {"sums": {}, "samples": 0, "tokens": 0, "micro": 0, "t0": time.perf_counter()}
    stopped = _rank0_says(out_of_patience(history, s), rank, world, device)  # a resumed run may have stopped
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        set_seed(s.seed + 1000 * (epoch + 1) + rank)  # exact resume: dropout depends on the epoch only
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        model.train()
        skip = skip_micro if epoch == start_epoch else 0  # a mid-epoch checkpoint's batches are done
        if win["micro"] == 0:  # samples/s counts the time in training batches only
            win["t0"] = time.perf_counter()
        for i, batch in enumerate(loader):
            if i < skip:
                if i + 1 == skip:
                    _set_rng_state(state["rng"])
                continue
            last_micro = (i + 1) % s.grad_accum == 0 or i + 1 == micro_per_epoch
            in_step = min(s.grad_accum, micro_per_epoch - (i // s.grad_accum) * s.grad_accum)  # loss divisor
            sync = model.no_sync() if (world > 1 and not last_micro and hasattr(model, "no_sync")) else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss, parts = task.loss(model, batch)
                scaler.scale(loss / in_step).backward()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                win["sums"][k] = win["sums"].get(k, 0.0) + float(v)
            win["micro"] += 1
            win["samples"] += int(next(iter(batch.values())).shape[0])
            if "attention_mask" in batch:
                win["tokens"] += int(batch["attention_mask"].sum())
            if not last_micro:
                continue
            if s.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            if channel is not None:
                channel.send(every_s=PROGRESS_EVERY_S, unit="step", done=global_step, total=total_steps,
                             epoch=epoch + 1, epochs=epochs, epoch_end=False, info={"loss": float(loss)})
            if rank == 0 and (global_step % s.log_every == 0 or global_step == total_steps):
                dt = max(time.perf_counter() - win["t0"], 1e-9)
                logger.info("epoch %d step %d/%d %s lr %.2e | %.1f samples/s %.0f tokens/s (rank 0)",
                            epoch, global_step, total_steps,
                            " ".join(f"{k} {v:.4f}" for k, v in {"loss": float(loss), **parts}.items()),
                            scheduler.get_last_lr()[0], win["samples"] / dt, win["tokens"] / dt)
            if evaluates_after_step(s, global_step, total_steps):
                stopped = evaluate_and_report(epoch, i + 1)
                if stopped:
                    break
            if global_step >= total_steps:  # a step budget ends inside its last epoch
                break
        if evaluates_at_epoch_end(s):
            stopped = evaluate_and_report(epoch, micro_per_epoch)
    return {"history": history if rank == 0 else [], "global_step": global_step, "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch, "resumed_from_epoch": start_epoch if state is not None else None,
            "resumed_from_step": state["global_step"] if state is not None else None,
            "stopped_on_patience": stopped}


def _rank0_says(flag: bool, rank: int, world: int, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank (so that all workers leave the epoch loop together)."""
    return _all_reduce_sum([int(rank == 0 and flag)], world, device)[0] > 0


def _all_reduce_sum(values: list[int], world: int, device: torch.device) -> list[float]:
    if world == 1 or not torch.distributed.is_initialized():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()

"""When a training run stops, evaluates and resumes: pure functions of its settings and history,
read by the loop in `tkre.train_loop` on every worker and tested directly.

`s` is a `tkre.train_loop.LoopSettings` (any object with its fields): `epochs` or `max_steps` set the
budget, `eval_every_steps` when dev is evaluated (None: after every epoch), `patience` when a run
stops early (counted in evaluations, which are epochs unless `eval_every_steps` is set).
"""

from __future__ import annotations

import math
from typing import Any


def planned_steps(s, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, optimizer steps) of a run: `max_steps` and the epochs they need, else `epochs` whole epochs."""
    if s.max_steps is not None:
        return math.ceil(s.max_steps / steps_per_epoch), s.max_steps
    return s.epochs, s.epochs * steps_per_epoch


def evaluates_after_step(s, global_step: int, total_steps: int) -> bool:
    """True when a step schedule evaluates after optimizer step `global_step` (1-based): every
    `eval_every_steps` steps and after the last one. False for an epoch schedule (it evaluates at
    each epoch's end, see `evaluates_at_epoch_end`)."""
    if s.eval_every_steps is None:
        return False
    return global_step % s.eval_every_steps == 0 or global_step == total_steps


def evaluates_at_epoch_end(s) -> bool:
    """True for an epoch schedule (the default, the paper's): one evaluation after every epoch."""
    return s.eval_every_steps is None


def out_of_patience(history: list[dict[str, Any]], s) -> bool:
    """True once `s.patience` evaluations have passed since the best `select_metric` (the first best on ties)."""
    if s.patience is None or not history:
        return False
    values = [h.get(s.select_metric) for h in history]
    if any(v is None for v in values):
        return False  # not the rank that evaluates (or nothing to watch): rank 0 decides
    best = values.index(max(values) if s.select_mode == "max" else min(values))
    return len(values) - 1 - best >= s.patience


def resume_point(state: dict[str, Any], micro_per_epoch: int) -> tuple[int, int]:
    """(epoch, micro-batches of it already trained) to continue from a checkpoint's saved state:
    the next epoch after an epoch-end checkpoint, the same epoch after a mid-epoch one (a step
    schedule's). Checkpoints written before mid-epoch ones existed hold no `micro_done`: epoch end."""
    done = state.get("micro_done")
    if done is None or done >= micro_per_epoch:
        return state["epoch"] + 1, 0
    return state["epoch"], int(done)

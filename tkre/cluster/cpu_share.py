"""The CPUs one sweep trial's own CPU generation pool (hf backend) may reserve, fixed when the sweep starts.

Why: a pool's actors reserve as many Ray CPUs as they run torch threads. Counted from
`ray.available_resources()` when the pool is built, that number depends on which other trial happens
to hold its training workers at that instant: two trials starting together on 2 cores gave the
generation actor 2 CPUs (the other trial's Train worker had not reserved yet), and the actor then
waited until the other trial's whole fine-tuning was done -- the trials ran one after the other in all
but name. A sweep knows how many trials run at once, so each trial gets the same share instead: the
cluster's CPUs divided by the concurrent trials (at most one node's CPUs: an actor cannot span nodes).

Threads and reservation: `threads` = the share's whole CPUs (at least 1), the same rule Ray Train
workers follow for their `cpus_per_worker` (`tkre.train_loop`); the reservation is that, less the
trial driver's own fraction (`resources.trial_cpus`, already reserved, mostly idle), so that the
concurrent trials' drivers and pools fit the cluster exactly (2 cores, 2 trials: 1 thread, 0.95 CPU
reserved, beside the other trial's 0.95-CPU Train worker).

Nothing here is part of an artifact key: the thread count changes how fast tokens come, and only
through floating-point summation order (matmul rounding) may change which token a sampled row draws
(see docs/generators.md).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

#: Ray's resource granularity (CPUs are fixed-point with 4 decimals): reservations are rounded down to it.
_RAY_UNIT = 1e-4
#: the least a pool actor reserves (a zero reservation would not be one)
_MIN_RESERVATION = 0.01


@dataclass(frozen=True)
class CpuShare:
    """A trial's CPUs: `cpus` in all (its driver included), `trial_cpus` of them its driver's."""

    cpus: float
    trial_cpus: float = 0.0

    def threads(self, actors: int = 1) -> int:
        """Torch threads per actor of a pool of `actors`: the whole CPUs of its part, at least 1."""
        return max(1, int(self.cpus / max(1, actors) + 1e-9))

    def reservation(self, actors: int = 1) -> float:
        """Ray CPUs per actor: its threads, at most its part of the share less the trial driver's."""
        part = (self.cpus - self.trial_cpus) / max(1, actors)
        part = round(math.floor(part / _RAY_UNIT + 1e-6) * _RAY_UNIT, 4)
        return max(_MIN_RESERVATION, min(float(self.threads(actors)), part))


def share_for_trials(total_cpus: float, largest_node_cpus: float, concurrent_trials: int,
                     trial_cpus: float) -> CpuShare:
    """Each of `concurrent_trials` trials' share of a cluster with `total_cpus` (never more than its
    largest node's `largest_node_cpus`)."""
    per_trial = total_cpus / max(1, concurrent_trials)
    return CpuShare(cpus=min(per_trial, largest_node_cpus) if largest_node_cpus > 0 else per_trial,
                    trial_cpus=trial_cpus)


_current: CpuShare | None = None


@contextmanager
def use(share: CpuShare | None) -> Iterator[CpuShare | None]:
    """Make `share` this process's trial CPU share for the block (None: none; pools count free CPUs)."""
    global _current
    previous, _current = _current, share
    try:
        yield share
    finally:
        _current = previous


def current() -> CpuShare | None:
    """The CPU share of the sweep trial this process runs, if it runs one."""
    return _current

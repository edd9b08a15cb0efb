"""Progress events of long runs, from wherever the work runs to the console of the process that shows it.

One channel, used the same way by a sweep (one live line per trial), `tkre pretrain` and `tkre finetune`
(a progress bar):

- `Channel`: a handle on a small zero-CPU Ray actor holding events (so a trial on another node of a
  cluster reaches the driver the same way) plus tags added to every event (e.g. the sweep's trial id
  and variant). Picklable: it travels into Ray tasks and into Ray Train's workers. Senders never
  wait (fire-and-forget actor calls); the reader polls without blocking.
- `use(channel)`: makes it this process's current channel; `emit(**fields)` sends one event to the
  current channel and does nothing when there is none (a plain library call shows nothing extra).
  Sending never raises: progress display must not fail the work it reports on.
- Events are flat dicts. The ones tkre sends:
  `{"stage": "finetune", "state": "computing" | "reused"}` (the artifact store, per pipeline stage),
  `{"unit": "rows", "done": 120, "total": 400}` (LLM generation),
  `{"unit": "step", "done": 34, "total": 170, "epoch": 2, "epochs": 10, "epoch_end": False, "info": {...}}`
  (the train loop: every few seconds, and at the end of each epoch with its metrics).

Hand-written because Ray offers no progress channel across processes; `ray.util.queue.Queue` waits
for the actor on every put and get, which stalls Tune's control loop on a busy machine.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator


class _Inbox:
    """The Ray actor behind a channel: a bounded list of events, taken all at once by the reader."""

    def __init__(self, limit: int = 10_000):
        self.events: list[dict] = []
        self.limit = limit

    def put(self, event: dict) -> None:
        self.events.append(event)
        if len(self.events) > self.limit:  # nobody reads: keep the newest
            del self.events[: len(self.events) - self.limit]

    def take(self) -> list[dict]:
        out, self.events = self.events, []
        return out


class Channel:
    """An inbox actor handle plus the tags every event gets. Sending is fire-and-forget; reading
    (`poll`) never blocks, so neither side waits on the other."""

    def __init__(self, inbox: Any, **tags: Any):
        self.inbox, self.tags = inbox, tags
        self._last_sent: dict[str, float] = {}
        self._pending = None

    @classmethod
    def create(cls, **tags: Any) -> "Channel":
        """A new inbox actor (zero CPUs; Ray must be initialised), owned by the creating process and on
        its node (a zero-CPU actor may land on any node, and a lost worker node must not take it along)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return cls(ray.remote(_Inbox).options(num_cpus=0, scheduling_strategy=here).remote(), **tags)

    def tagged(self, **tags: Any) -> "Channel":
        return Channel(self.inbox, **{**self.tags, **tags})

    def send(self, *, every_s: float = 0.0, **fields: Any) -> None:
        """Send one event; with `every_s`, drop it if an event of the same unit went out less than
        `every_s` seconds ago (for per-row / per-step callers)."""
        now = time.time()
        unit = str(fields.get("unit"))
        if every_s and now - self._last_sent.get(unit, 0.0) < every_s:
            return
        self._last_sent[unit] = now
        try:
            self.inbox.put.remote({**self.tags, **fields, "time": now})
        except Exception:  # the inbox's owner is gone: progress is best-effort
            pass

    def poll(self) -> list[dict]:
        """The events that arrived since the last poll, or [] if the answer is not there yet."""
        import ray

        if self._pending is None:
            self._pending = self.inbox.take.remote()
        ready, _ = ray.wait([self._pending], timeout=0)
        if not ready:
            return []
        ref, self._pending = self._pending, self.inbox.take.remote()
        return self._get(ref)

    def drain(self, timeout_s: float = 5.0) -> list[dict]:
        """Every event sent so far (waits up to `timeout_s`; for the last read before closing)."""
        refs = [r for r in (self._pending, self.inbox.take.remote()) if r is not None]
        self._pending = None
        return [e for ref in refs for e in self._get(ref, timeout_s)]

    @staticmethod
    def _get(ref, timeout_s: float | None = None) -> list[dict]:
        import ray

        try:
            return list(ray.get(ref, timeout=timeout_s))
        except Exception:
            return []

    def close(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.inbox)

    def __getstate__(self) -> dict:
        return {"inbox": self.inbox, "tags": self.tags}

    def __setstate__(self, state: dict) -> None:
        self.inbox, self.tags, self._last_sent, self._pending = state["inbox"], state["tags"], {}, None


_current: Channel | None = None


def current() -> Channel | None:
    return _current


@contextlib.contextmanager
def use(channel: Channel | None) -> Iterator[Channel | None]:
    """Make `channel` this process's current channel for the block (None: no progress events)."""
    global _current
    previous, _current = _current, channel
    try:
        yield channel
    finally:
        _current = previous


def emit(*, every_s: float = 0.0, **fields: Any) -> None:
    """Send an event to the current channel, if there is one."""
    if _current is not None:
        _current.send(every_s=every_s, **fields)

"""Cross-process locks for the artifact store (and anything else that needs one lock per name).

- `file_lock`: an exclusive `fcntl.flock` on a file (local disk or NFS); no service needed, and the
  kernel releases it when its process exits or dies, so a SIGKILLed holder never leaves it stale.
- `ray_actor_lock`: for object stores, which have no locks -- a named lock table in one detached Ray
  actor per cluster. A hold is a short lease (`DEFAULT_LEASE_S`, 60 s) that a heartbeat thread renews
  every third of a lease while the holder lives: a holder killed without running its `finally`
  (`ray.cancel(force=True)`, a lost node) frees the lock within one lease instead of blocking it for
  the whole wait time-out. Hand-written: Ray has no distributed lock, and a lock service (etcd,
  Redis) would be one more thing to run on every cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout_s: float, poll_s: float = 0.2) -> Iterator[None]:
    """Exclusive `fcntl.flock` on `path` (local or NFS); released when the process exits or dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f}s for artifact lock {path}") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ Ray actor lock (object stores)
_LOCK_ACTOR = "tkre-artifact-locks-v2"  # v2: leases with renew()
#: Lease of a remote-store lock; the holder renews it every third of a lease while it lives, so a holder
#: killed without its `finally` (ray.cancel(force=True), a lost node) frees the lock within one lease.
DEFAULT_LEASE_S = 60.0


class _LockTable:
    """Named-lock table living in one Ray actor. Each hold is a lease that its holder renews."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}

    def acquire(self, name: str, token: str, lease_s: float) -> bool:
        now = time.time()
        holder = self.held.get(name)
        if holder is not None and holder[0] != token and holder[1] > now:
            return False
        self.held[name] = (token, now + lease_s)
        return True

    def renew(self, name: str, token: str, lease_s: float) -> bool:
        """Extend the holder's lease; False if it is no longer the holder (its lease ran out)."""
        holder = self.held.get(name)
        if holder is None or holder[0] != token:
            return False
        self.held[name] = (token, time.time() + lease_s)
        return True

    def release(self, name: str, token: str) -> None:
        if self.held.get(name, ("",))[0] == token:
            del self.held[name]


def _heartbeat(actor: Any, name: str, token: str, lease_s: float, stop: threading.Event) -> None:
    import ray

    while not stop.wait(lease_s / 3):
        try:
            if not ray.get(actor.renew.remote(name, token, lease_s), timeout=lease_s):
                log.warning("lock %s: lease lost (this process stalled for longer than %gs)", name, lease_s)
                return
        except Exception as e:  # the lock actor is unreachable: keep trying until released
            log.warning("lock %s: lease renewal failed: %s", name, e)


@contextlib.contextmanager
def ray_actor_lock(name: str, *, timeout_s: float, lease_s: float = DEFAULT_LEASE_S,
                   poll_s: float = 0.5) -> Iterator[None]:
    """Cluster-wide named lock held in a detached Ray actor, leased for `lease_s` and renewed by a
    heartbeat thread while the holder lives."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the first user's node (the pipelines' node, e.g. the head), not on a worker node that may be lost
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    actor = ray.remote(num_cpus=0)(_LockTable).options(
        name=_LOCK_ACTOR, namespace="tkre", get_if_exists=True, lifetime="detached", scheduling_strategy=here).remote()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while not ray.get(actor.acquire.remote(name, token, lease_s)):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for artifact lock {name}")
        time.sleep(poll_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(actor, name, token, lease_s, stop), daemon=True,
                            name=f"tkre-lock-heartbeat-{name}")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        ray.get(actor.release.remote(name, token))

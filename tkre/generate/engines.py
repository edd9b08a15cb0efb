"""One generation job's engines: long-lived Ray actors, each holding one backend (one model load),
reused by every call of the job -- SCDG's rounds above all.

SCDG asks in up to `scdg.max_rounds` rounds; each round is one `generate_rows` call. When every
round ran its own Ray Data pipeline (`map_batches` over an actor pool, or `ray.data.llm`'s vLLM
processor), each round started a new pool, so a job loaded its model once per round: up to 10
loads of a 13B model (minutes each) where one would do. A Ray Data actor lives only as long as one
Dataset execution, so keeping Ray Data meant keeping the reloads.

Why an actor pool (Ray core: `ray.remote` actors + `ray.util.ActorPool`) and not a Ray Serve LLM
deployment:

- start-up: an actor costs its model load and nothing else; Serve adds a controller, an HTTP proxy
  per node and a deployment's health checks before the first row, and a port of its own;
- placement: as Ray's own vLLM stage -- TP=1: the actor reserves one GPU (of `vllm.accelerator_type`);
  TP>1: a placement group of TP one-GPU bundles on one node that vLLM's Ray executor fills with its
  workers (`placement_group_capture_child_tasks`); what `tkre.cluster.resources` checks;
- lifetime: the pool is the job's (a context manager): its actors (and their GPUs) are given back
  when SCDG ends, never left running as a cluster-wide application;
- simplicity and dependencies: no `ray[serve]`, no HTTP hop and no second client path for the rows;
  the engine is an ordinary object at one boundary (`VLLMBackend`'s `engine_cls`), which is what
  the tests replace to count engine constructions.

A pool starts its actors only when the first batch goes out, so a job served wholly from the
generation cache loads no model at all. EDKG and SCDG each run one pool (two loads per experiment
at most): they are two artifacts, each computed under its own cluster-wide generation slot
(`ArtifactStore.slot`), and a pool kept between them would hold GPUs outside any slot.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

from tkre.config import DecodingConfig
from tkre.generate.backends import BackendSpec

log = logging.getLogger(__name__)

#: an actor that dies (a node lost, the OOM killer) is restarted this often, and its batch retried
ACTOR_RESTARTS = 2


class EngineActor:
    """A Ray actor holding one backend: built once (one model load), then completes batches."""

    def __init__(self, spec: BackendSpec):
        self.backend = spec.build()

    def generate(self, batch: dict, sampling: DecodingConfig) -> dict:
        results = self.backend.generate_rows([str(p) for p in batch["prompt"]], sampling,
                                             [int(s) for s in batch["seed"]],
                                             [str(s) or None for s in batch["schema"]])
        return {"key": [str(k) for k in batch["key"]],
                "text": [r.text or "" for r in results],
                "tokens": [int(r.tokens) for r in results],
                "input_tokens": [int(r.input_tokens) for r in results],
                "error": [r.error or "" for r in results],
                "constrained": [bool(r.constrained) for r in results],
                "dialect": [r.dialect or "" for r in results]}


def replica_options(spec: BackendSpec) -> dict[str, Any]:
    """The Ray options of one engine actor (without a placement group: see `replica_bundles`)."""
    opts: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus,
                            "max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}
    if spec.accelerator_type and not spec.bundles:
        opts["accelerator_type"] = spec.accelerator_type
    return opts


def replica_bundles(spec: BackendSpec) -> list[dict[str, float]] | None:
    """The placement group bundles of one replica (TP>1: one GPU each, the accelerator type as Ray's
    `accelerator_type:<name>` resource), or None when the actor reserves its own resources."""
    if not spec.bundles:
        return None
    label = {f"accelerator_type:{spec.accelerator_type}": 0.001} if spec.accelerator_type else {}
    return [{**b, **label} for b in spec.bundles]


class EnginePool:
    """`spec.replicas` engine actors for one generation job; `run` may be called any number of times.

    Use as a context manager (or call `close`): the actors and placement groups are released at exit.
    A run with another spec than the running actors' (a backend prepared for constrained rows after
    free-text ones) replaces them."""

    def __init__(self):
        self.spec: BackendSpec | None = None
        self.actors: list = []
        self.groups: list = []
        self.started = 0  # engine actors started (each one model load)

    def __enter__(self) -> "EnginePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, spec: BackendSpec) -> list:
        if self.actors and spec == self.spec:
            return self.actors
        self.close()
        self.spec = spec
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actor_cls = ray.remote(EngineActor)
        bundles = replica_bundles(self.spec)
        for _ in range(self.spec.replicas):
            opts = replica_options(self.spec)
            if bundles:
                group = placement_group(bundles, strategy="STRICT_PACK")  # TP GPUs share a node
                self.groups.append(group)
                opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_capture_child_tasks=True)
            self.actors.append(actor_cls.options(**opts).remote(self.spec))
        self.started += len(self.actors)
        log.info("generation: %d %s engine(s) of %s started for this job", len(self.actors), self.spec.name,
                 self.spec.model_id)
        return self.actors

    def run(self, spec: BackendSpec, batches: Iterable[dict], sampling: DecodingConfig) -> Iterator[dict]:
        """Result batches (columns: key, text, tokens, input_tokens, error, constrained, dialect) in
        the order they finish; the engines are started on the first batch."""
        from ray.util import ActorPool

        batches = list(batches)
        if not batches:
            return iter(())
        pool = ActorPool(self._start(spec))
        return pool.map_unordered(lambda actor, batch: actor.generate.remote(batch, sampling), batches)

    def close(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            ray.kill(actor)
        for group in self.groups:
            remove_placement_group(group)
        self.actors, self.groups = [], []


def batches_of(rows: list[dict], size: int) -> list[dict]:
    """Rows (dicts with key, prompt, seed, schema) as column batches of at most `size` rows."""
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        out.append({c: [r[c] for r in chunk] for c in ("key", "prompt", "seed", "schema")})
    return out

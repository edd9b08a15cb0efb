"""Can a sweep's trials ever run on this cluster, and how many at once? One check, before any trial starts.

What a trial asks Ray for is read from its experiment config, never restated elsewhere:
  - its own process (the pipeline driver): `resources.trial_cpus` of the sweep file (`SweepResources`);
  - each Ray Train run (pre-training when a stage is on, fine-tuning): `num_workers` workers of
    `ResourcesConfig.per_worker()` (`pretrain.resources`, `finetune.resources`);
  - LLM generation with vLLM: `num_replicas` engine replicas of `tensor_parallel_size` GPUs each, every
    replica on ONE node (its tensor-parallel GPUs share a node); with the hf backend on CPU, only where
    its threads are fixed (`threads_per_actor`): `concurrency` actors of `cpus_per_actor` CPUs (else a
    trial's pool takes the trial's share, tkre/cluster/cpu_share.py, which fits by construction).

Why the trial's own reservation holds only the driver: under Ray Train v2 the trainer starts its own
placement group for its workers (a separate, all-or-nothing request), and generation starts its own
engine actors (tkre/generate/engines.py). A trial therefore needs, at its peak, its driver plus the
larger of its stages, and never holds half of a stage while waiting.

`fit_trials(requests, ...)` raises a ConfigError (every problem, one per line) when a trial can never
be placed: a bundle larger than any node (a placement-group bundle cannot span nodes), more workers or
replicas than the cluster can ever hold, or `max_concurrent_trials` drivers that leave no room for one
trial's stage (a sweep that hangs is worse than one that fails). Otherwise it returns how many trials
could train at once, each with its largest training run, counting the trial whose largest run is the
smallest (at most `max_concurrent_trials`; a larger trial beside them waits for their workers). The capacity
is the largest the cluster can ever reach: the live nodes plus, when an autoscaler is configured
(`cluster.yaml` / the head's bootstrap file), every node type up to its max_workers.

Packing is first-fit decreasing over node instances, hand-written because Ray exposes no offline
"would this placement group fit these nodes" query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tkre.cluster.cluster_yaml import NodeShape, head_bootstrap_config, load_cluster_yaml, node_shapes
from tkre.config import ExperimentConfig
from tkre.errors import ConfigError

log = logging.getLogger(__name__)

# Resource keys that say where a node is, not what it offers to tasks.
_IGNORED_KEYS = ("memory", "object_store_memory")
_EPS = 1e-9
#: CPUs one vLLM engine replica reserves beside its GPUs (its engine actor, tkre/generate/engines.py).
VLLM_CPUS_PER_REPLICA = 1.0


class Request(NamedTuple):
    """`count` bundles of `bundle`, asked for by one stage of a trial."""

    stage: str
    count: int
    bundle: dict[str, float]


def trial_requests(cfg: ExperimentConfig) -> list[Request]:
    """The Ray requests of one experiment's stages, apart from its driver (see the module docstring)."""
    out = []
    if cfg.stages.pretrain_stage1 or cfg.stages.pretrain_stage2:
        out.append(Request("pretrain", cfg.pretrain.resources.num_workers, cfg.pretrain.resources.per_worker()))
    out.append(Request("finetune", cfg.finetune.resources.num_workers, cfg.finetune.resources.per_worker()))
    layouts = []  # EDKG's and SCDG's generators run one after the other: one request per distinct layout
    for gen in cfg.active_generators():
        layout = (gen.vllm.num_replicas, float(gen.vllm.tensor_parallel_size))
        if gen.backend == "vllm" and layout not in layouts:
            layouts.append(layout)
            out.append(Request("generation", layout[0], {"CPU": VLLM_CPUS_PER_REPLICA, "GPU": layout[1]}))
        elif gen.backend == "hf" and gen.fixed_actor_cpus() and gen.device != "cuda":  # a fixed CPU pool
            out.append(Request("generation", gen.concurrency, {"CPU": gen.fixed_actor_cpus()}))
    return out


# ------------------------------------------------------------------------------ cluster capacity

@dataclass
class ClusterCapacity:
    """The nodes a cluster has or can ever start (an upper bound), and where that came from."""

    shapes: list[NodeShape]
    sources: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.shapes:
            for k, v in s.resources.items():
                out[k] = out.get(k, 0.0) + v * s.max_count
        return out

    def largest(self, key: str) -> tuple[float, str]:
        best = max(self.shapes, key=lambda s: s.resources.get(key, 0.0), default=None)
        return (best.resources.get(key, 0.0), best.name) if best else (0.0, "none")

    def describe(self) -> str:
        return ", ".join(f"{s.name}: {s.max_count} x {_fmt(s.resources)}" for s in self.shapes) or "no nodes"


def _fmt(bundle: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"


def _usable(resources: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items()
            if k not in _IGNORED_KEYS and not k.startswith("node:") and float(v) > 0}


def capacity_from_nodes(nodes: list[dict]) -> ClusterCapacity:
    """Capacity of live nodes as `ray.nodes()` reports them (dead nodes ignored)."""
    shapes = [NodeShape(n.get("NodeManagerAddress") or n.get("NodeID", "node")[:8], _usable(n.get("Resources", {})), 1)
              for n in nodes if n.get("Alive", True)]
    return ClusterCapacity(shapes, ["live Ray nodes"])


def cluster_capacity(cluster_config: str | dict | None = None, *, live: bool = True) -> ClusterCapacity:
    """The most the cluster can ever give: live nodes (if Ray is initialised and `live`) plus, when an
    autoscaler config is known (`cluster_config` path/dict, else the head's ~/ray_bootstrap_config.yaml),
    every node type up to its max_workers. Live nodes that fit inside a configured node type are
    counted as instances of it, not twice."""
    import ray

    configured: list[NodeShape] = []
    sources: list[str] = []
    if isinstance(cluster_config, (str, bytes)) or hasattr(cluster_config, "__fspath__"):
        cluster_config = load_cluster_yaml(cluster_config)
    elif cluster_config is None:
        cluster_config = head_bootstrap_config()
    if cluster_config:
        configured = node_shapes(cluster_config)
        sources.append("autoscaler node types")
    shapes = list(configured)
    if live and ray.is_initialized():
        for s in capacity_from_nodes(ray.nodes()).shapes:
            if not any(_fits(s.resources, c.resources) for c in configured):
                shapes.append(s)
        sources.append("live Ray nodes")
    if not shapes:
        raise ConfigError("cannot tell what the cluster offers: Ray is not initialised and no cluster "
                          "config was given (pass cluster.yaml or connect with --address)")
    return ClusterCapacity(shapes, sources)


# --------------------------------------------------------------------------------------- checks

def unit_of(r: Request) -> str:
    """What a request's bundles are: "vllm" engine replicas, "hf" generation actors, or "train" workers."""
    if r.stage != "generation":
        return "train"
    return "vllm" if "GPU" in r.bundle else "hf"


def _run_size(r: Request) -> float:
    """Orders training runs: GPUs first, then CPUs, times the workers."""
    return r.count * (r.bundle.get("GPU", 0) * 1e6 + r.bundle.get("CPU", 0))


def _training_peak(trial: list[Request]) -> Request | None:
    """A trial's largest training run (None without one)."""
    return max((r for r in trial if r.stage != "generation"), key=_run_size, default=None)


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)


def _packs(bundles: list[dict[str, float]], capacity: ClusterCapacity, limit: int = 4096) -> bool:
    """First-fit-decreasing placement of bundles onto the cluster's node instances."""
    nodes = [dict(s.resources) for s in capacity.shapes for _ in range(min(s.max_count, limit))]
    for bundle in sorted(bundles, key=lambda b: -(b.get("GPU", 0) * 1e6 + b.get("CPU", 0))):
        for free in nodes:
            if _fits(bundle, free):
                for k, v in bundle.items():
                    free[k] = free.get(k, 0.0) - v
                break
        else:
            return False
    return True


def distinct_requests(requests: list[Request]) -> list[Request]:
    seen, out = set(), []
    for r in requests:
        key = (r.stage, r.count, tuple(sorted(r.bundle.items())))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def fit_trials(trials: list[list[Request]], capacity: ClusterCapacity, *, trial_cpus: float,
               max_concurrent_trials: int, source: str = "resources",
               trial_resources: dict[str, float] | None = None) -> int:
    """Check that every trial can be placed; return how many can run at once (see the module docstring).

    `trials`: each trial's stage requests (`trial_requests` of its experiment)."""
    problems: list[str] = []
    where = f"the cluster ({capacity.describe()}; from {' + '.join(capacity.sources) or 'given nodes'})"
    totals = capacity.totals()
    driver = {"CPU": trial_cpus, **(trial_resources or {})}
    requests = distinct_requests([r for trial in trials for r in trial])

    def single(bundle: dict[str, float], what: str) -> bool:
        if any(_fits(bundle, s.resources) for s in capacity.shapes):
            return True
        detail = "; ".join(f"largest {k} per node: {v:g} ({n})" for k, (v, n) in
                           ((k, capacity.largest(k)) for k in bundle))
        problems.append(f"{source}: {what} needs {_fmt(bundle)} on ONE node, no node can offer it ({detail})")
        return False

    single(driver, "the trial driver (resources.trial_cpus)")
    placeable = []
    for r in requests:
        what = {"vllm": f"one vLLM replica of {r.stage} (tensor_parallel_size {r.bundle.get('GPU', 0):g})",
                "hf": f"one {r.stage} actor (generator.threads_per_actor / cpus_per_actor)"}.get(
                    unit_of(r), f"one Ray Train worker of {r.stage} ({r.stage}.resources)")
        if not single(r.bundle, what):
            continue
        if not _packs([r.bundle] * r.count, capacity):
            name = {"vllm": "num_replicas", "hf": "concurrency"}.get(unit_of(r), "num_workers")
            need = {k: v * r.count for k, v in r.bundle.items()}
            problems.append(f"{source}: {r.stage}: {name}={r.count} x {_fmt(r.bundle)} = {_fmt(need)} is more "
                            f"than {where} can ever hold (total {_fmt({k: totals.get(k, 0.0) for k in need})})")
            continue
        placeable.append(r)
    for r in placeable:  # each stage fits alone; now beside all concurrent trial drivers
        if not _packs([driver] * max_concurrent_trials + [r.bundle] * r.count, capacity):
            problems.append(
                f"{source}: max_concurrent_trials={max_concurrent_trials} trial drivers x {_fmt(driver)} leave "
                f"no room for one trial's {r.stage} stage on {where}: the sweep would wait forever; lower "
                "max_concurrent_trials or trial_cpus")
            break
    if problems:
        raise ConfigError("\n".join(problems))
    # concurrency: as many trials as could train at the same time, each with its largest training run,
    # counting the trial whose largest run is the smallest -- more at once could never all train. A
    # larger trial started beside them waits for their workers (Ray queues its request; each stage fits
    # beside every driver, checked above, so no wait lasts forever). The quickstart relies on it: TKRE
    # generates beside golden-only's 0.95-CPU training, then trains on 1.9 CPUs once golden-only is done.
    peaks = [p for p in map(_training_peak, trials) if p is not None]
    smallest = min(peaks, key=_run_size, default=None)
    concurrent = 1
    while concurrent < max_concurrent_trials and _packs(
            ([driver] + ([smallest.bundle] * smallest.count if smallest else [])) * (concurrent + 1), capacity):
        concurrent += 1
    if concurrent < max_concurrent_trials:
        log.warning("max_concurrent_trials lowered from %d to %d: that many trials with their training "
                    "workers fit %s", max_concurrent_trials, concurrent, where)
    log.info("resources fit: %s", where)
    return concurrent

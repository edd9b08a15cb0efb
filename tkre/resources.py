"""One `resources:` block -> every Ray resource request of a sweep, checked against the cluster up front.

A sweep YAML's `resources:` section (`ClusterResourcesConfig`) says, in one place:
  - the trial's own process (`trial_cpus`): the pipeline driver Ray Tune starts per trial;
  - fine-tuning / pre-training: Ray Train workers and CPUs/GPUs per worker;
  - generation with vLLM: GPUs per engine replica (tensor parallel) and replicas per generation job;
  - how many trials run at once.
From it the code derives the Tune placement group of a trial (`trial_resources`), the Ray Train
`ScalingConfig` arguments (`scaling_config_kwargs`), the vLLM processor's concurrency and
tensor_parallel_size (`vllm_processor_kwargs`), and the stage configs of an experiment
(`apply_to_experiment`).

Why the trial's placement group holds only the driver: under Ray Train v2 the trainer starts its
own placement group for its workers (a separate, all-or-nothing request), and Ray Data / ray.llm
start their own actors and placement groups for generation. A trial therefore needs, at its peak,
its driver plus the larger of its two stages, and never holds half of a stage while waiting.

`check_fits(cfg, capacity)` fails BEFORE the sweep starts when a trial can never be placed:
a bundle larger than any node (a placement-group bundle cannot span nodes; a vLLM replica's tensor
parallel GPUs must share one node), more workers or replicas than the cluster can ever hold, or
`max_concurrent_trials` drivers that would leave no room for any trial's stage (a sweep that hangs
is worse than one that fails). The capacity is the largest the cluster can ever reach: the live
nodes, plus, when an autoscaler is configured (`cluster.yaml` / the head's bootstrap file), every
node type up to its max_workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from tkre.cluster import NodeShape, head_bootstrap_config, load_cluster_yaml, node_shapes
from tkre.config import ExperimentConfig, ResourcesConfig, StrictModel
from tkre.errors import ConfigError

log = logging.getLogger(__name__)

# Resource keys that say where a node is, not what it offers to tasks.
_IGNORED_KEYS = ("memory", "object_store_memory")
_EPS = 1e-9


class ClusterResourcesConfig(StrictModel):
    """`resources:` section of a sweep YAML: what one trial asks for and how many run at once."""

    trial_cpus: float = Field(0.5, gt=0, description="CPUs for the trial's own process (the pipeline driver)")
    train_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes) per training run")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per Ray Train worker")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per Ray Train worker (0 = CPU training; "
                                                            "a fraction shares one GPU between trials)")
    generation_tensor_parallel: int = Field(1, ge=1, description="GPUs per vLLM engine replica (tensor parallel)")
    generation_replicas: int = Field(1, ge=1, description="vLLM engine replicas per generation job")
    generation_cpus_per_replica: float = Field(1.0, ge=0, description="CPUs reserved per vLLM replica")
    max_concurrent_trials: int = Field(1, ge=1, description="trials running at the same time")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK"] = Field(
        "PACK", description="Ray Train worker placement (STRICT_PACK = all workers of a run on one node)")

    @model_validator(mode="after")
    def _fractional_gpu(self) -> "ClusterResourcesConfig":
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError("gpus_per_worker above 1 must be a whole number")
        return self


# ------------------------------------------------------------------------------- derived requests

def driver_bundle(cfg: ClusterResourcesConfig) -> dict[str, float]:
    return {"CPU": cfg.trial_cpus}


def train_worker_bundle(cfg: ClusterResourcesConfig) -> dict[str, float]:
    bundle = {"CPU": cfg.cpus_per_worker}
    if cfg.gpus_per_worker > 0:
        bundle["GPU"] = cfg.gpus_per_worker
    return bundle


def vllm_replica_bundle(cfg: ClusterResourcesConfig) -> dict[str, float]:
    """All resources of one vLLM replica; its tensor-parallel GPUs must sit on one node."""
    return {"CPU": cfg.generation_cpus_per_replica, "GPU": float(cfg.generation_tensor_parallel)}


def trial_resources(cfg: ClusterResourcesConfig):
    """The Tune placement group of one trial: `tune.with_resources(trainable, trial_resources(cfg))`."""
    from ray import tune

    return tune.PlacementGroupFactory([driver_bundle(cfg)], strategy="PACK")


def train_resources(cfg: ClusterResourcesConfig) -> ResourcesConfig:
    """The `ResourcesConfig` (tkre/config.py) that pretrain/finetune pass to tkre.train_loop.fit."""
    values: dict[str, Any] = {"num_workers": cfg.train_workers, "use_gpu": cfg.gpus_per_worker > 0,
                              "cpus_per_worker": cfg.cpus_per_worker}
    if cfg.gpus_per_worker > 0 and "gpus_per_worker" in ResourcesConfig.model_fields:
        values["gpus_per_worker"] = cfg.gpus_per_worker
    return ResourcesConfig(**values)


def scaling_config_kwargs(resources: ResourcesConfig | ClusterResourcesConfig) -> dict[str, Any]:
    """Keyword arguments of `ray.train.ScalingConfig` for one training run."""
    if isinstance(resources, ClusterResourcesConfig):
        placement = resources.placement_strategy
        resources = train_resources(resources)
    else:
        placement = "PACK"
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = float(getattr(resources, "gpus_per_worker", None) or 1.0)
    return {"num_workers": resources.num_workers, "use_gpu": resources.use_gpu,
            "resources_per_worker": per_worker, "placement_strategy": placement}


def vllm_processor_kwargs(cfg: ClusterResourcesConfig) -> dict[str, Any]:
    """`concurrency` (engine replicas) and `tensor_parallel_size` for ray.data.llm's vLLM processor."""
    return {"concurrency": cfg.generation_replicas, "tensor_parallel_size": cfg.generation_tensor_parallel}


_TRAIN_FIELDS = {"train_workers", "cpus_per_worker", "gpus_per_worker"}


def apply_to_experiment(cfg: ClusterResourcesConfig, experiment: ExperimentConfig, *,
                        only_set: bool = False) -> ExperimentConfig:
    """A copy of `experiment` whose stage configs carry the resources decided by `cfg`.

    only_set=True applies only the fields written in the `resources:` block (`model_fields_set`), so a
    sweep can leave e.g. the vLLM layout to each experiment's own `generation.vllm` section."""
    given = cfg.model_fields_set if only_set else set(ClusterResourcesConfig.model_fields)
    out = experiment.model_copy(deep=True)
    if "generation_tensor_parallel" in given:
        out.generation.vllm.tensor_parallel_size = cfg.generation_tensor_parallel
    if "generation_replicas" in given:
        out.generation.vllm.num_replicas = cfg.generation_replicas
    if given & _TRAIN_FIELDS:
        train = train_resources(cfg)
        out.pretrain.resources = train.model_copy()
        out.finetune.resources = train.model_copy()
    return out


def resources_for(experiments: list[ExperimentConfig], *, trial_cpus: float = 0.5,
                  max_concurrent_trials: int = 1) -> ClusterResourcesConfig:
    """The peak `resources:` block of a set of experiments (the inverse of apply_to_experiment):
    the largest Train layout of any enabled pre-training / fine-tuning stage and the largest vLLM
    layout of any experiment that generates with vLLM. Feed it to check_fits before a sweep."""
    workers, cpus, gpus, tp, replicas = 1, 0.0, 0.0, 1, 1
    for cfg in experiments:
        stages = [cfg.finetune.resources]
        if cfg.stages.pretrain_stage1 or cfg.stages.pretrain_stage2:
            stages.append(cfg.pretrain.resources)
        for r in stages:
            workers = max(workers, r.num_workers)
            cpus = max(cpus, r.cpus_per_worker)
            if r.use_gpu:
                gpus = max(gpus, float(getattr(r, "gpus_per_worker", 1.0) or 1.0))
        if cfg.generation.backend == "vllm" and (cfg.stages.edkg or cfg.stages.scdg):
            tp = max(tp, cfg.generation.vllm.tensor_parallel_size)
            replicas = max(replicas, cfg.generation.vllm.num_replicas)
    return ClusterResourcesConfig(trial_cpus=trial_cpus, train_workers=workers, cpus_per_worker=cpus or 1.0,
                                  gpus_per_worker=gpus, generation_tensor_parallel=tp, generation_replicas=replicas,
                                  max_concurrent_trials=max_concurrent_trials)


def uses_vllm(experiments: list[ExperimentConfig]) -> bool:
    return any(c.generation.backend == "vllm" and (c.stages.edkg or c.stages.scdg) for c in experiments)


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

def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)


def _instances(capacity: ClusterCapacity, limit: int = 4096) -> list[tuple[str, dict[str, float]]]:
    out = []
    for s in capacity.shapes:
        out.extend((s.name, dict(s.resources)) for _ in range(min(s.max_count, limit)))
    return out


def _pack(groups: list[list[dict[str, float]]], nodes: list[tuple[str, dict[str, float]]],
          same_node: list[bool]) -> bool:
    """First-fit-decreasing placement of bundle groups onto nodes (mutates the free resources).

    A group with same_node=True must land whole on one node (a vLLM replica, a STRICT_PACK run)."""
    order = sorted(range(len(groups)), key=lambda i: -sum(b.get("GPU", 0) * 1e6 + b.get("CPU", 0)
                                                             for b in groups[i]))
    for i in order:
        if same_node[i]:
            total: dict[str, float] = {}
            for b in groups[i]:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
            todo = [total]
        else:
            todo = groups[i]
        for bundle in todo:
            for _, free in nodes:
                if _fits(bundle, free):
                    for k, v in bundle.items():
                        free[k] = free.get(k, 0.0) - v
                    break
            else:
                return False
    return True


def check_fits(cfg: ClusterResourcesConfig, capacity: ClusterCapacity, *, uses_vllm: bool = False,
               trains: bool = True, source: str = "resources") -> None:
    """Raise ConfigError (every problem, one per line) if a trial can never run on this cluster.

    `uses_vllm`: whether the trials generate with the vLLM backend (only then do they need GPUs for
    generation); `trains`: whether they start Ray Train runs (False for trials that do all their work in
    their own process). Call it before building the Tuner."""
    problems: list[str] = []
    where = f"the cluster ({capacity.describe()}; from {' + '.join(capacity.sources) or 'given nodes'})"
    totals = capacity.totals()

    def single(bundle: dict[str, float], what: str) -> bool:
        if any(_fits(bundle, s.resources) for s in capacity.shapes):
            return True
        biggest = {k: capacity.largest(k) for k in bundle}
        detail = "; ".join(f"largest {k} per node: {v:g} ({n})" for k, (v, n) in biggest.items())
        problems.append(f"{source}: {what} needs {_fmt(bundle)} on ONE node, no node can offer it ({detail})")
        return False

    driver = driver_bundle(cfg)
    single(driver, "the trial driver (trial_cpus)")

    worker = train_worker_bundle(cfg)
    if trains and single(worker, "one Ray Train worker (cpus_per_worker, gpus_per_worker)"):
        strict = cfg.placement_strategy == "STRICT_PACK"
        if not _pack([[worker] * cfg.train_workers], _instances(capacity), [strict]):
            need = {k: v * cfg.train_workers for k, v in worker.items()}
            problems.append(
                f"{source}: train_workers={cfg.train_workers} x {_fmt(worker)} = {_fmt(need)} "
                f"{'on one node (STRICT_PACK) ' if strict else ''}is more than {where} can ever hold "
                f"(total {_fmt({k: totals.get(k, 0.0) for k in need})})")

    replica = vllm_replica_bundle(cfg) if uses_vllm else None
    if replica is not None and single(replica, f"one vLLM replica (generation_tensor_parallel="
                                               f"{cfg.generation_tensor_parallel} GPUs + CPUs)"):
        if not _pack([[replica]] * cfg.generation_replicas, _instances(capacity), [True] * cfg.generation_replicas):
            problems.append(
                f"{source}: generation_replicas={cfg.generation_replicas} x {_fmt(replica)} is more than "
                f"{where} can ever hold (total GPU {totals.get('GPU', 0.0):g})")

    if not problems:  # every stage fits alone; now with all concurrent trial drivers holding their CPUs
        stages = [("training", [[worker] * cfg.train_workers], [cfg.placement_strategy == "STRICT_PACK"])] if trains else []
        if replica is not None:
            stages.append(("generation", [[replica]] * cfg.generation_replicas, [True] * cfg.generation_replicas))
        drivers = [[driver]] * cfg.max_concurrent_trials
        for name, groups, same in stages:  # (drivers alone overflowing only lowers concurrency: no hang)
            if not _pack(drivers + groups, _instances(capacity), [False] * len(drivers) + same):
                problems.append(
                    f"{source}: max_concurrent_trials={cfg.max_concurrent_trials} trial drivers x "
                    f"{_fmt(driver)} leave no room for one trial's {name} stage on {where}: the sweep "
                    f"would wait forever; lower max_concurrent_trials or trial_cpus")
    if problems:
        raise ConfigError("\n".join(problems))
    log.info("resources fit: %s", where)


def check_cluster_file(cluster_yaml: str, sweep_file: str | None = None) -> dict[str, Any]:
    """`tkre cluster check`: validate a cluster file offline and, given a sweep file, check that its
    trials fit the node types. Returns a summary for the CLI; raises ConfigError on any problem."""
    from tkre.cluster import load_cluster_yaml, validate_cluster_config

    raw = load_cluster_yaml(cluster_yaml)
    prepared = validate_cluster_config(raw, str(cluster_yaml))
    capacity = cluster_capacity(prepared, live=False)
    summary: dict[str, Any] = {"provider": prepared["provider"]["type"], "node_types": capacity.describe(),
                               "max_totals": capacity.totals()}
    if sweep_file:
        from tkre.sweep import resolve_sweep_file
        from tkre.sweep_config import experiment_for, grid_points, load_sweep

        sweep = load_sweep(resolve_sweep_file(sweep_file))
        experiments = [experiment_for(sweep, p) for p in grid_points(sweep)]
        cfg = resources_for(experiments, trial_cpus=sweep.resources.trial_cpus,
                            max_concurrent_trials=sweep.resources.max_concurrent_trials)
        check_fits(cfg, capacity, uses_vllm=uses_vllm(experiments), source=f"{sweep_file}: resources")
        summary["sweep"] = {"name": sweep.name, "trials_per_grid": len(experiments), "resources": cfg.model_dump(),
                            "uses_vllm": uses_vllm(experiments)}
    return summary

"""`tkre sweep FILE --plan`: what a sweep will run, without starting Ray or reading any dataset.

Every trial of every phase (grid; search: `num_samples` Optuna trials per grid point, their searched
fields still open; evaluate: the best searched config of each search phase over `evaluate.seeds`),
its variant, dataset, K, seed, backbone, which stages run, synthetic samples asked per relation, the
artifacts trials share, and the Ray resources one trial asks for.

Shared artifacts are found with the pipeline's own stage graph (`tkre.pipeline.stage_keys`, the
keys `run_experiment` stores under); the dataset files' hash, unknown before the files are read, is
stood in for by the dataset's name and paths, so two trials share a planned key exactly when they
will share the stored artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tkre.config import DataConfig, ExperimentConfig
from tkre.io import stable_hash
from tkre.pipeline import STAGES, stage_keys
from tkre.cluster.resources import trial_requests, unit_of
from tkre.sweep.phases import plan_phases
from tkre.sweep.config import SweepConfig, bounds, experiment_for


@dataclass
class PlannedTrial:
    name: str  # phase/index, e.g. grid/003, search-001/2, evaluate/004
    phase: str
    variant: str | None
    point: dict[str, Any]  # the trial's dotted overrides (variant included)
    experiment: ExperimentConfig  # resolved; searched fields hold their base values
    searched: dict[str, str]  # search phases: dotted field -> distribution (open until Optuna samples it)
    artifacts: dict[str, str]  # stage -> planned artifact key (stages that run)


def planned_artifact_keys(cfg: ExperimentConfig, data_hash: str | None = None) -> dict[str, str]:
    """stage -> artifact key of each stage this experiment runs (`tkre.pipeline.stage_keys`, the keys
    `run_experiment` stores under); `data_hash` defaults to a stand-in for the dataset files' hash."""
    return stage_keys(cfg, data_hash or stand_in_data_hash(cfg.data))


def stand_in_data_hash(data: DataConfig) -> str:
    """Stands for the dataset files' hash before they are read: their dataset name and paths (two
    trials read the same files exactly when these match)."""
    return stable_hash([data.dataset, data.path, data.patch_path])


def _describe(dist) -> str:
    if dist.type == "choice":
        return f"choice {list(dist.values)}"
    return f"{dist.type} {dist.low:g}..{dist.high:g}"


def plan_trials(sweep: SweepConfig) -> list[PlannedTrial]:
    """Every trial the sweep will run, phase by phase (see the module docstring)."""
    out: list[PlannedTrial] = []

    def add(name: str, phase: str, point: dict, searched: dict[str, str]) -> None:
        cfg = experiment_for(sweep, point)
        keys = planned_artifact_keys(cfg)
        for field in searched:  # a stage whose key moves with a searched field is this trial's own
            for value in bounds(sweep.search.space[field]):
                probe = planned_artifact_keys(experiment_for(sweep, {**point, field: value}))
                keys.update({s: f"{name} (searched)" for s, k in probe.items() if keys.get(s) != k})
        out.append(PlannedTrial(name, phase, point.get("variant"), dict(point), cfg, searched, keys))

    searches = []
    for phase in plan_phases(sweep):  # the phases tkre.sweep.run.run_sweep runs, in its order
        if phase.kind == "grid":
            for i, p in enumerate(phase.points):
                add(f"grid/{i:03d}", phase.name, p, {})
        elif phase.kind == "search":
            searched = {k: _describe(d) for k, d in sweep.search.space.items()}
            for j in range(sweep.search.num_samples):
                add(f"{phase.name}/{j}", phase.name, phase.points[0], searched)
            searches.append(phase)
        else:  # evaluate: the best of each search phase over the evaluate seeds (tkre.sweep.phases.best_points)
            n = 0
            for search in searches:
                for seed in sweep.evaluate.seeds:
                    best = {k: f"best of {search.name}" for k in sweep.search.space}
                    add(f"evaluate/{n:03d}", phase.name, {**search.points[0], "data.seed": seed}, best)
                    n += 1
    return out


def trial_summary(t: PlannedTrial) -> dict[str, Any]:
    """The columns of the plan table for one trial."""
    c = t.experiment
    on = [name for name, flag in (("edkg", c.stages.edkg), ("scdg", c.stages.scdg),
                                  ("s1", c.stages.pretrain_stage1 and c.stages.edkg),
                                  ("s2", c.stages.pretrain_stage2)) if flag]
    return {"trial": t.name, "variant": t.variant or "-", "dataset": c.data.dataset, "K": c.data.k,
            "seed": c.data.seed, "backbone": c.finetune.backbone, "stages": "+".join(on) or "finetune",
            "synth/rel": c.synthetic_asked_per_relation(), "source": c.scdg.source if c.stages.scdg else "-",
            "cap": c.finetune.synthetic_cap_per_relation, "budget": finetune_budget(c),
            "searched": ("best" if t.phase == "evaluate" else "open") if t.searched else "-"}


def finetune_budget(cfg: ExperimentConfig) -> str:
    """The fine-tuning budget a trial runs with (e.g. `12 epochs`, `120 steps`)."""
    return cfg.finetune.budget.describe(cfg.finetune.epochs)


def shared_artifacts(trials: list[PlannedTrial]) -> dict[str, list[tuple[str, list[str]]]]:
    """stage -> [(planned key, the trials that use it)], in first-use order."""
    out: dict[str, dict[str, list[str]]] = {}
    for t in trials:
        for stage, key in t.artifacts.items():
            out.setdefault(stage, {}).setdefault(key, []).append(t.name)
    return {s: list(out[s].items()) for s in STAGES if s in out}


def plan_json_lines(sweep: SweepConfig) -> list[dict[str, Any]]:
    """`--plan --json`: one object per trial, with its fully resolved experiment config."""
    return [{"name": t.name, "phase": t.phase, "variant": t.variant, "point": t.point, "searched": t.searched,
             "artifacts": t.artifacts, "config": t.experiment.model_dump(mode="json")}
            for t in plan_trials(sweep)]


def search_lines(sweep: SweepConfig) -> list[str]:
    """The search space once: open in search trials, the best found in evaluate trials."""
    if sweep.search is None:
        return []
    return [f"{k}: {_describe(d)}" for k, d in sweep.search.space.items()] + [
        f"{sweep.search.num_samples} Optuna trial(s) per grid point on {sweep.search.metric} ({sweep.search.mode})"
        + (f"; evaluate: the best of each over seeds {sweep.evaluate.seeds}" if sweep.evaluate else "")]


def resource_lines(sweep: SweepConfig, trials: list[PlannedTrial]) -> list[str]:
    """What one trial asks Ray for (every distinct request of the sweep) and the sweep-wide limits."""
    seen: list = []
    for t in trials:
        for r in trial_requests(t.experiment):
            if r not in seen:
                seen.append(r)
    lines = [f"trial driver: {sweep.resources.trial_cpus:g} CPU; at most {sweep.resources.max_concurrent_trials} "
             f"trial(s) at once, {sweep.resources.generation_slots} generation job(s) at once"]
    for r in seen:
        per = ", ".join(f"{k} {v:g}" for k, v in sorted(r.bundle.items()))
        unit = {"vllm": "vLLM replica(s)", "hf": "generation actor(s)"}.get(unit_of(r), "Ray Train worker(s)")
        lines.append(f"{r.stage}: {r.count} {unit} x {{{per}}}")
    return lines


def gpu_memory_lines(trials: list[PlannedTrial]) -> list[str]:
    """One line per distinct vLLM generator of the sweep: its accelerator, and whether its weights fit
    that GPU's memory at its tensor parallelism (`tkre.cluster.gpu_memory`); `DOES NOT FIT` flags it."""
    from tkre.cluster.gpu_memory import memory_check

    seen: dict[tuple, tuple[list[str], str]] = {}
    for t in trials:
        cfg = t.experiment
        gens = [("edkg", cfg.edkg.generator)] if cfg.stages.edkg else []
        gens += [("scdg", cfg.scdg.generator)] if cfg.stages.scdg else []
        for role, g in gens:
            if g.backend != "vllm":
                continue
            v = g.vllm
            ident = (g.model, g.revision, v.accelerator_type, v.tensor_parallel_size, v.gpu_memory_utilization)
            if ident not in seen:
                seen[ident] = ([], memory_check(g.model, accelerator=v.accelerator_type,
                                                tensor_parallel_size=v.tensor_parallel_size,
                                                gpu_memory_utilization=v.gpu_memory_utilization, revision=g.revision)[1])
            if role not in seen[ident][0]:
                seen[ident][0].append(role)
    return [f"{'+'.join(roles)}: {line}" for roles, line in seen.values()]


def check_cluster_file(cluster_yaml: str, sweep_file: str | None = None) -> dict[str, Any]:
    """`tkre cluster check`: validate a cluster file offline and, given a sweep file, check that its
    trials fit the node types and that every dataset folder they read is mounted or copied onto the
    nodes (`tkre.cluster.data_mounts`). Returns a summary for the CLI; raises ConfigError on any problem."""
    from pathlib import Path

    from tkre.cluster.cluster_yaml import docker_env, load_cluster_yaml, secret_findings, validate_cluster_config
    from tkre.cluster.data_mounts import missing_dataset_folders
    from tkre.cluster.resources import cluster_capacity, distinct_requests, fit_trials
    from tkre.errors import ConfigError
    from tkre.sweep.config import grid_points, load_sweep, resolve_sweep_file

    raw = load_cluster_yaml(cluster_yaml)
    secrets = secret_findings(Path(cluster_yaml).read_text(encoding="utf-8"))
    if secrets:  # keys come from the launching environment, never from a file (docs/cluster.md)
        raise ConfigError(f"{cluster_yaml}: secret-looking values ({'; '.join(secrets)}): pass keys from the "
                          "environment you launch from, never write them into the cluster file")
    prepared = validate_cluster_config(raw, str(cluster_yaml))
    capacity = cluster_capacity(prepared, live=False)
    summary: dict[str, Any] = {"provider": prepared["provider"]["type"], "node_types": capacity.describe(),
                               "max_totals": capacity.totals(),
                               "storage": docker_env(prepared).get("TKRE_STORAGE_PATH")}
    if sweep_file:
        sweep = load_sweep(resolve_sweep_file(sweep_file))
        experiments = [experiment_for(sweep, p) for p in grid_points(sweep)]
        per_trial = [trial_requests(cfg) for cfg in experiments]
        requests = distinct_requests([r for trial in per_trial for r in trial])
        concurrent = fit_trials(per_trial, capacity, trial_cpus=sweep.resources.trial_cpus,
                                trial_resources=sweep.resources.trial_resources,
                                max_concurrent_trials=sweep.resources.max_concurrent_trials,
                                source=f"{sweep_file}: resources")
        trials = [(t.name, t.experiment) for t in plan_trials(sweep)]
        missing = missing_dataset_folders(prepared, trials, trial_resources=sweep.resources.trial_resources,
                                          sweep_file=str(sweep_file), cluster_file=str(cluster_yaml))
        if missing:  # the trial would fail on the cluster with "does not exist", after the nodes started
            raise ConfigError("\n".join(missing))
        folders = sorted({v for _, cfg in trials for v in (cfg.data.path, cfg.data.patch_path) if v})
        summary["sweep"] = {"name": sweep.name, "trials_per_grid": len(experiments),
                            "requests": [r._asdict() for r in requests], "concurrent_trials": concurrent,
                            "dataset_folders": folders}
    return summary

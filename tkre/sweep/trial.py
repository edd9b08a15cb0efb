"""One sweep trial, start to end: the Tune function trainable (`run_trial`), the Ray task that runs its
pipeline (`pipeline_task`), who owns that task -- one actor per sweep driver, so that a trial
ending early cancels its pipeline gently instead of killing it -- and when Tune counts a trial done:
at the report of its results row (`StopAtRow`).

A trial (`run_trial`) runs its experiment in a Ray task. When Tune ends a trial before its
pipeline is done -- an ASHA stop, the sweep's time budget, a crashed trial -- the trial's actor goes,
and a task that actor owned is killed with it. Ray Train then loses its run ungracefully: the run's
placement group stays reserved until the driver's job ends (Ray removes a placement group only when
both its creator and its job are dead; Train's own cleaner asks the dashboard's state API, which tkre
runs without). A few stopped trials then hold every CPU and the next trials wait forever. Seen: the
16-trial `cpu_semeval_search` on 2 CPUs stalled after its second ASHA stop, 1.9 CPUs reserved by
two groups whose runs were gone; `ray.kill` of a task's owner leaves the group reserved (tested).
Not every stop kills the task in time to leak (in-process test sweeps did not show it).

So the driver starts a `PipelineRuns` actor (`pipeline_runs`) that submits every trial's
pipeline task and owns it; the trial only waits on the reference. When Tune reports a trial ended
(`CancelEndedPipelines`, a Tune callback on the driver), its pipeline, if still running, is cancelled
with `ray.cancel`: KeyboardInterrupt inside the pipeline, Ray Train aborts its run and removes its
placement group (generation engine pools and Ray Data evaluation pools stop the same way); force only
after a grace period. Nothing in Ray or Tune does this for a task launched from a function trainable,
hence this module.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from typing import Any

from ray.tune import Callback, Stopper

from tkre import progress
from tkre.cluster import cpu_share
from tkre.config import ExperimentConfig
from tkre.results import FINISHED, SweepDir
from tkre.sweep.config import SweepConfig, experiment_for, trial_overrides

log = logging.getLogger(__name__)

#: The driver's PipelineRuns actor, by name (in the driver's own Ray namespace: two sweeps on one
#: cluster each have their own).
RUNS_ACTOR = "tkre_pipeline_runs"


def pipeline_task(cfg: ExperimentConfig, callbacks: list | None, generation_slots: int, channel: progress.Channel,
                  variant: str | None, share: cpu_share.CpuShare | None = None) -> dict:
    """One experiment in a plain Ray task (outside any placement group); progress goes to `channel`;
    returns the flat results row. `cfg` is the trial's config as built (pickled by Ray, every default
    already filled in); `share`: the trial's CPUs for its own CPU generation pool (`tkre.cluster.cpu_share`)."""
    from tkre.store.artifacts import ArtifactStore
    from tkre.pipeline import run_experiment

    store = ArtifactStore(cfg.storage_path, slots={"generation": generation_slots})
    with progress.use(channel), cpu_share.use(share):
        return run_experiment(cfg, callbacks=callbacks, store=store, variant=variant).to_flat()


def pipeline_task_options(resources: dict[str, float]) -> dict:
    """Ray options of a pipeline task: no CPU of its own, the trial's custom `resources`
    (`resources.trial_resources`), in no placement group -- Ray Train and Ray Data inside reserve their
    own resources."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"num_cpus": 0, "max_retries": 0, "resources": dict(resources),
            "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None)}


def warm_pipeline_worker() -> None:
    """A task that only imports what a pipeline task needs before its first line runs (its own module,
    Tune's report callback, tkre's pipeline). Started with the sweep, it leaves an idle worker process
    with those imports done while Tune starts the first trial; Ray hands that worker to the first
    pipeline instead of starting a fresh process then (~2 s off the first trial on 2 cores:
    benchmarks/sweep_overhead.py). Later pipelines reuse their predecessors' workers anyway."""
    import importlib

    for module in ("ray.tune.integration.ray_train", "tkre.pipeline"):
        importlib.import_module(module)


def run_trial(config: dict, *, spec: dict) -> None:
    """The Tune function trainable: one experiment, per-epoch reports forwarded, then the row."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    sweep = SweepConfig.model_validate(spec["sweep"])
    overrides = trial_overrides(config)
    trial_id = tune.get_context().get_trial_id()
    SweepDir(spec["sweep_dir"]).append_event({"event": "start", "trial_id": trial_id, "phase": spec["phase"],
                                              "overrides": overrides, "pid": os.getpid(), "time": time.time()})
    cfg = experiment_for(sweep, overrides)
    channel = spec["progress"].tagged(trial=trial_id, variant=overrides.get("variant"))  # the console line
    runs = ray.get_actor(RUNS_ACTOR)  # the driver's: it owns the pipeline (tkre.sweep.trial)
    [ref] = ray.get(runs.start.remote(trial_id, sweep.resources.trial_resources, pipeline_task, cfg,
                                      [TuneReportCallback()], sweep.resources.generation_slots, channel,
                                      overrides.get("variant"), spec.get("cpu_share")))
    ready, _ = ray.wait([ref], timeout=sweep.trial_timeout_s)
    if not ready:
        ray.get(runs.cancel.remote(trial_id))
        raise TimeoutError(f"trial exceeded trial_timeout_s={sweep.trial_timeout_s:g}s (watchdog): cancelled")
    row = ray.get(ref)
    if row.get("reused.finetune"):  # no epochs ran: replay the stored history so ASHA/Optuna see it
        for h in json.loads(row.get("epoch_history") or "[]"):
            if h.get("dev_micro_f1") is not None:
                tune.report({"epoch": h.get("epoch"), "dev_micro_f1": h["dev_micro_f1"]})
    # before the row: Tune ends the trial at that report (`StopAtRow`), this thread may not run on
    SweepDir(spec["sweep_dir"]).append_event({"event": "end", "trial_id": trial_id, "phase": spec["phase"],
                                              "time": time.time()})
    tune.report({**row, FINISHED: True})


class PipelineRuns:
    """The owner of every trial's pipeline task (see the module docstring)."""

    def __init__(self):
        self._refs: dict[str, Any] = {}

    def start(self, trial_id: str, resources: dict[str, float], fn, *args) -> list:
        """Start `fn(*args)` (`pipeline_task`) as a task for a trial, reserving the custom `resources`
        (`resources.trial_resources`); returns [its ObjectRef] (in a list, so the caller gets the
        reference to wait on, not the row)."""
        import ray

        ref = self._refs[trial_id] = ray.remote(fn).options(**pipeline_task_options(resources)).remote(*args)
        return [ref]

    def cancel(self, trial_id: str, grace_s: float = 60.0) -> bool:
        """Cancel a trial's pipeline if it still runs (True) and forget it; False if it had ended."""
        import ray

        ref = self._refs.pop(trial_id, None)
        if ref is None or ray.wait([ref], timeout=0)[0]:
            return False
        log.warning("trial %s ended before its pipeline: cancelling the pipeline", trial_id)
        ray.cancel(ref)  # KeyboardInterrupt: Ray Train aborts its run and gives its placement group back
        if not ray.wait([ref], timeout=grace_s)[0]:
            ray.cancel(ref, force=True, recursive=True)
        return True

    def cancel_all(self) -> list[str]:
        """Cancel every pipeline still running (a phase that ended on its time budget); their trials."""
        return [t for t in list(self._refs) if self.cancel(t)]


@contextmanager
def pipeline_runs(trial_resources: dict[str, float] | None = None, name_free_timeout_s: float = 30.0):
    """The driver's PipelineRuns actor for one sweep (threaded, so a cancel that waits for its
    pipeline does not hold up the next trial's start). On the way out -- done, failed or interrupted
    -- every pipeline still running is cancelled gently, the actor is killed and its name is free
    again before this returns: a named actor that merely went out of scope dies later, and a next
    sweep in the same driver (tests, notebooks) would find the dying one by name. `trial_resources`:
    the pipelines' custom resources, for the worker warmed for the first one (`warm_pipeline_worker`)."""
    import ray

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the driver's node: the owner of every pipeline must not go down with a worker node
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    runs = ray.remote(PipelineRuns).options(name=RUNS_ACTOR, num_cpus=0, max_concurrency=64,
                                            scheduling_strategy=here).remote()
    ray.remote(warm_pipeline_worker).options(**pipeline_task_options(trial_resources or {})).remote()
    try:
        yield runs
    finally:
        try:
            ray.get(runs.cancel_all.remote())
        finally:
            ray.kill(runs)
            deadline = time.monotonic() + name_free_timeout_s
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(RUNS_ACTOR)
                except ValueError:  # gone: the name is free
                    break
                time.sleep(0.1)
            else:
                log.warning("the %s actor was killed but still held its name after %.0f s",
                            RUNS_ACTOR, name_free_timeout_s)


class StopAtRow(Stopper):
    """Tune stopper (driver): a trial is done at its row report (`FINISHED`). Without it Tune learns
    that a function trainable returned only when its poll for the next result times out (0.2 s in
    Ray 2.60): 0.2 s between trials, 0.4 s after a sweep's last (benchmarks/sweep_overhead.py).
    Stateless: Tune pickles it with the run."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return bool(result.get(FINISHED))

    def stop_all(self) -> bool:
        return False


class CancelEndedPipelines(Callback):
    """Tune callback (driver): a trial that ended -- done, stopped, failed -- has its pipeline
    cancelled if it still runs, and forgotten otherwise. Stateless: Tune pickles it with the run."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        import ray

        ray.get_actor(RUNS_ACTOR).cancel.remote(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.on_trial_complete(iteration, trials, trial)

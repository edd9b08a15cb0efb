"""`tkre sweep sweeps/<name>.yaml`: a sweep file -> Ray Tune phases -> one results Parquet.

Phases (each one Tune experiment under `<storage>/sweeps/<name>/<phase>`):
- `grid`: no search space: every grid point x variant once (Tune grid_search, no early stopping);
- `search-<i>`: one per grid point: Optuna TPE (seeded) over the search space, ASHA on the dev
  metric that fine-tuning reports once per epoch, `num_samples` trials;
- `evaluate`: the best config of every search phase (by the dev metric only) over `evaluate.seeds`;
  test micro-F1 is reported for it and never used for selection.

A trial is a *function* trainable (Ray Train v2 does not run under Tuner(TorchTrainer)): it builds the
experiment and runs `tkre.pipeline.run_experiment` in a Ray task scheduled *outside* the trial's
placement group (Tune captures child tasks into it), passing `TuneReportCallback()` so fine-tuning's
per-epoch reports reach Tune. The task is owned by the driver's `tkre.sweep.trial.PipelineRuns`, not by
the trial: a trial that Tune ends early (ASHA, time budget) has its pipeline cancelled gently, so
Ray Train gives its placement group back. Resources that cannot deadlock on a small machine:
- the trial itself holds a small CPU fraction (`resources.trial_cpus`);
- Ray Train workers reserve their own placement group; `max_concurrent_trials` is lowered so that the
  training workers of all concurrent trials fit the cluster at once (`tkre.cluster.resources.fit_trials`);
- LLM generation (engine actor pools) runs under a sweep-wide slot (`resources.generation_slots`),
  so two pools never hold all CPUs waiting on each other's tasks; a trial waiting for a shared
  artifact's lock holds no CPUs; a CPU (hf) pool reserves its trial's fixed share of the cluster's
  CPUs (`tkre.cluster.cpu_share`), never more than the other concurrent trials leave it;
- a watchdog: `trial_timeout_s` cancels a stuck trial (recorded as failed) and `sweep_timeout_s`
  bounds the whole phase (Tune's time budget).

Resume (`--resume`): finished phases are skipped; an interrupted phase is restored with
`Tuner.restore(resume_unfinished=True)`, which restores its searcher; the Optuna study itself is
stored in the sweep's database (`tkre.sweep.study`), so the resumed search continues the same study
and TPE keeps its history. Finished trials are not rerun. A crashing trial is recorded as `error`
with its message and the sweep goes on. Every trial start and end is logged as an event
(`tkre.results.SweepDir.append_event`). A search phase's trials reach Optuna as they ended: complete,
pruned (stopped by ASHA) or failed (`tkre.sweep.searcher`).

Rows: each trial's row is a `tkre.results.TrialRow` -- the sweep's own fields (phase, trial,
variant, status, error, selected_from, overrides, search params) around the pipeline's whole
`ResultRow`. The sweep directory (results.parquet, plan.json, `<phase>.done.json` markers, events)
is a `tkre.results.SweepDir`, so local and remote (s3://, gs://) storage behave the same: a resumed
sweep whose file changed is refused on both.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tkre import __version__, progress
from tkre.store.artifacts import check_storage_writable, is_remote, join_uri, local_path
from tkre.config import ExperimentConfig
from tkre.errors import ConfigError, DataError
from tkre.io import stable_hash
from tkre.results import PLAN_FILE, SweepDir
from tkre.cluster.runtime import environ_defaults, init_ray
from tkre.cluster.cpu_share import share_for_trials
from tkre.cluster.resources import cluster_capacity, fit_trials, trial_requests
from tkre.sweep.config import (SweepConfig, experiment_for, grid_points, load_sweep, resolve_sweep_file, start_point,
                               trial_overrides)
from tkre.sweep.phases import Phase, best_points, phase_complete, phase_rows, plan_phases

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------- preflight
def preflight(sweep: SweepConfig, source: str) -> list[ExperimentConfig]:
    """Everything checkable before Ray starts: dataset paths exist, storage is writable."""
    experiments = [experiment_for(sweep, p) for p in grid_points(sweep)]
    seen = set()
    for cfg in experiments:
        for name, value in (("data.path", cfg.data.path), ("data.patch_path", cfg.data.patch_path)):
            if value and value not in seen:
                seen.add(value)
                if "://" not in value and not Path(os.path.expanduser(value)).exists():
                    raise DataError(f"{name} {value!r} does not exist (dataset {cfg.data.dataset})",
                                    file=source, field=name)
    storage = experiments[0].storage_path
    check_storage_writable(storage, min_free_gb=sweep.min_free_gb)
    return experiments


def sweep_dir(sweep: SweepConfig, storage: str) -> str:
    return join_uri(storage, "sweeps", sweep.name) if is_remote(storage) else \
        str(local_path(storage) / "sweeps" / sweep.name)


def console_log_path(sweep_file: str | Path, storage_path: str | None = None) -> Path:
    """Where a sweep command without `--verbose` writes Ray's and Tune's own output
    (`tkre.cluster.quiet`): `<sweep dir>/logs/console-<UTC time>.log`; with remote storage under
    `~/.cache/tkre/logs/<sweep>/` (the process's descriptors point at it: it must be a local file)."""
    sweep = load_sweep(resolve_sweep_file(sweep_file))
    storage = storage_path or os.environ.get("TKRE_STORAGE_PATH") or \
        experiment_for(sweep, grid_points(sweep)[0]).storage_path
    folder = (Path(os.path.expanduser("~/.cache/tkre/logs")) / sweep.name if is_remote(storage)
              else Path(sweep_dir(sweep, storage)) / "logs")
    return folder / time.strftime("console-%Y%m%dT%H%M%SZ.log", time.gmtime())


#: Tune's settings for a sweep's phases (environment variables, documented in Tune's "Environment
#: variables" page; a value the user set wins), set only while a phase runs so that other Tune runs in
#: the same process keep Tune's defaults:
#: - TUNE_GLOBAL_CHECKPOINT_S: Tune writes its experiment state (trial statuses, searcher state) every so
#:   many seconds ("auto": 10 s or more, stretching with the state's size): 2 s makes a SIGKILL lose at
#:   most ~2 s of bookkeeping, so trials that finished before the kill are not rerun on --resume. Each
#:   write is a small JSON and the searcher's pickle, and a copy of the driver's staging folder (the
#:   trials' params and result.json) to storage_path, skipped while the previous copy still runs.
#: - TUNE_PRINT_ALL_TRIAL_ERRORS=0: a failed trial's trace goes to its error.txt only; TrialLines prints
#:   the one-line reason.
#: - TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: no CSV and TensorBoard logger per trial (a tensorboardX import,
#:   an event per numeric field of every result -- the final row has well over a hundred -- and two more
#:   files in every experiment-state copy); `_make_tuner` keeps Tune's JSON logger, so each trial's
#:   result.json is there and `ResultGrid`'s metrics dataframes still load. tkre reads neither.
TUNE_SETTINGS = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
                 "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


@contextmanager
def tune_settings():
    """`TUNE_SETTINGS` in the environment for the block (those the user has not set), then as before."""
    with environ_defaults(TUNE_SETTINGS):
        yield


def _wandb_callbacks(sweep: SweepConfig, directory: str, kind: str | None = None) -> list:
    from tkre.sweep.tracking import wandb_callbacks

    return wandb_callbacks(enabled=sweep.wandb.enabled, project=sweep.wandb.project, group=sweep.name,
                           directory=None if is_remote(directory) else directory, job_type=kind,
                           sweep=sweep.model_dump())


def _wandb_summary(sweep: SweepConfig, root: str, rows: list[dict]) -> None:
    """The sweep's W&B summary run (tkre.sweep.wandb_log): results table, report plots, artifacts."""
    from tkre.sweep.tracking import settle_wandb_mode, wandb_on
    from tkre.sweep.wandb_log import log_sweep_summary

    if not rows or not wandb_on(sweep.wandb.enabled):
        return

    try:
        log_sweep_summary(project=sweep.wandb.project, group=sweep.name, mode=settle_wandb_mode(), rows=rows,
                          directory=None if is_remote(root) else root, sweep_dir=root)
    except Exception as e:  # noqa: BLE001 -- the results are written; W&B trouble is a warning
        log.warning("W&B summary run of sweep %s not logged: %s", sweep.name, e)


def _trial_config_space(sweep: SweepConfig, phase: Phase):
    from ray import tune

    if phase.kind == "search":
        return dict(phase.points[0])  # the fixed part; the searcher (tkre.sweep.searcher) adds the searched fields
    return {"point": tune.grid_search(phase.points)}


def _with_run_constants(points: list[dict], sweep: SweepConfig) -> list[dict]:
    """Put dataset and seed into every trial's config so W&B can group by them (ray#33084)."""
    out = []
    for p in points:
        cfg = experiment_for(sweep, trial_overrides({"point": p}))
        out.append({"data.dataset": cfg.data.dataset, "data.seed": cfg.data.seed, "data.k": cfg.data.k, **p})
    return out


def _make_tuner(sweep: SweepConfig, phase: Phase, concurrent: int, root: str, trainable, resume: bool):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from tkre.console import TrialLines  # one line per trial event instead of status tables (verbose=0)
    from tkre.sweep.trial import CancelEndedPipelines, StopAtRow

    path = join_uri(root, phase.name) if is_remote(root) else str(Path(root) / phase.name)
    if resume and tune.Tuner.can_restore(path):
        log.info("phase %s: restoring from %s (unfinished trials resume, finished ones are kept)", phase.name, path)
        # the callbacks and searcher come back as pickled when the phase started: write_plan refused a
        # resume by another tkre version; the W&B callback settles its mode again in its setup
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=sweep.restart_errored)
    search_alg = scheduler = None
    num_samples = 1
    metric = mode = None
    if phase.kind == "search":
        from tkre.sweep.searcher import StudySearch
        from tkre.sweep.study import StudyFile, study_name

        s = sweep.search
        metric, mode, num_samples = s.metric, s.mode, s.num_samples
        search_alg = StudySearch(study_file=StudyFile(root), study_name=study_name(sweep.name, phase.name),
                                 space={k: d.to_optuna() for k, d in s.space.items()}, metric=metric, mode=mode,
                                 seed=s.seed,
                                 points_to_evaluate=[start_point(sweep, phase.points[0])] if s.start_from_base else None)
        if s.asha is not None:
            max_t = 1 + max(experiment_for(sweep, phase.points[0]).finetune.epochs, 1) * 2
            scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
                                      grace_period=s.asha.grace_period, reduction_factor=s.asha.reduction_factor)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                  max_concurrent_trials=concurrent,
                                  time_budget_s=sweep.sweep_timeout_s,
                                  # the next trial runs in a finished trial's process (no start-up and imports
                                  # per trial); not under ASHA: a stopped trial's thread still waits on its
                                  # pipeline, Tune could not reset that process and would fail the next trial
                                  reuse_actors=scheduler is None,
                                  **({} if scheduler else {"metric": metric, "mode": mode} if metric else {}))
    run_config = tune.RunConfig(name=phase.name, storage_path=root, stop=StopAtRow(),
                                failure_config=tune.FailureConfig(max_failures=sweep.resources.max_failures,
                                                                fail_fast=False),
                                callbacks=[TrialLines(show_test=phase.kind != "search", phase=phase.name,
                                                      total=num_samples if phase.kind == "search" else len(phase.points)),
                                           CancelEndedPipelines(),
                                           JsonLoggerCallback(),  # the one auto logger kept (TUNE_SETTINGS)
                                           *_wandb_callbacks(sweep, root, phase.kind)],
                                verbose=0)
    return tune.Tuner(trainable, param_space=_trial_config_space(sweep, phase), tune_config=tune_config,
                      run_config=run_config)


# ------------------------------------------------------------------------------------- driver
@dataclass
class SweepOutcome:
    sweep_dir: str
    results_path: str
    rows: pd.DataFrame
    seconds: float
    concurrent_trials: int


def run_sweep(path: str | Path, *, resume: bool = False, address: str | None = None,
              storage_path: str | None = None) -> SweepOutcome:
    """Run (or resume) every phase of a sweep file; returns where the results table is."""
    t0 = time.perf_counter()
    path = resolve_sweep_file(path)
    sweep = load_sweep(path)
    storage_path = storage_path or os.environ.get("TKRE_STORAGE_PATH")  # cluster.yaml sets it on every node
    if storage_path:
        sweep = sweep.model_copy(update={"storage_path": storage_path})
    experiments = preflight(sweep, str(path))
    root = sweep_dir(sweep, experiments[0].storage_path)
    sdir = SweepDir(root)
    write_plan(sdir, sweep, source=str(path), resume=resume)

    import ray
    from ray import tune

    if not ray.is_initialized():
        if not (address or os.environ.get("RAY_ADDRESS")):  # trials run here: convert while Ray starts
            from tkre.generate.backends.hf import convert_in_background

            convert_in_background(experiments)
        # default: a fresh local Ray (never silently attach to someone else's); `--address auto` or
        # RAY_ADDRESS (set by `ray job submit`) attach to a running cluster
        init_ray(address, dashboard=True)  # secrets/settings reach workers from the shell, never from a file
    # what the cluster can ever give: live nodes plus the autoscaler's node types (GPU workers that
    # start at zero count); fail before any trial starts when one trial can never be placed
    capacity = cluster_capacity()
    concurrent = fit_trials([trial_requests(cfg) for cfg in experiments], capacity,
                            trial_cpus=sweep.resources.trial_cpus, trial_resources=sweep.resources.trial_resources,
                            max_concurrent_trials=sweep.resources.max_concurrent_trials, source=f"{path}: resources")
    # each trial's CPUs for its own CPU generation pool: fixed now, not read from what is free when the
    # pool starts (that depends on which other trial has reserved its workers yet)
    share = share_for_trials(capacity.totals().get("CPU", 0.0), capacity.largest("CPU")[0], concurrent,
                             sweep.resources.trial_cpus)
    log.info("sweep %s: %d grid point(s), up to %d concurrent trial(s), results in %s",
             sweep.name, len(experiments), concurrent, root)
    phases = plan_phases(sweep)
    studies = None
    if sweep.search is not None:  # one Optuna study per search phase, in the sweep's database
        from tkre.sweep.study import StudyFile

        studies = StudyFile(root)
        studies.fetch()  # before Tune restores a searcher: a remote sweep resumed on another machine
        log.info("Optuna studies in %s (optuna-dashboard %s)", studies.location, studies.url)
    channel = progress.Channel.create()  # trials -> this driver's console (works across a cluster)
    from tkre.sweep.tracking import wandb_hidden, wandb_on
    from tkre.sweep.trial import pipeline_runs, run_trial

    rows: list[dict] = []
    results_path = ""
    # the runs actor owns the trials' pipelines: an early-ended trial's is cancelled gently
    with pipeline_runs(sweep.resources.trial_resources) as runs:
        for phase in phases:
            done = sdir.read_json(f"{phase.name}.done.json")
            if done is not None:
                rows.extend(done["rows"])
                log.info("phase %s: already finished, skipped", phase.name)
                continue
            if phase.kind == "evaluate":
                phase.points = best_points(rows, sweep, phases)
                if not phase.points:
                    continue
            if phase.kind != "search":
                phase.points = _with_run_constants(phase.points, sweep)
            spec = {"sweep": sweep.model_dump(), "sweep_dir": root, "phase": phase.name, "progress": channel,
                    "cpu_share": share}
            trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                                            {"cpu": sweep.resources.trial_cpus, **sweep.resources.trial_resources})
            tuner = _make_tuner(sweep, phase, concurrent, root, trainable, resume)
            # TrialLines (a Tune callback on this driver) reads the channel
            with progress.use(channel), tune_settings(), wandb_hidden(not wandb_on(sweep.wandb.enabled)):
                result_grid = tuner.fit()
            ray.get(runs.cancel_all.remote())  # a phase cut by its time budget leaves no pipeline running
            ended = phase_rows(result_grid, phase, sweep)
            rows.extend(ended)
            results_path = sdir.write_results(rows)
            if not phase_complete(phase, len(ended)):  # Ctrl-C: Tune stops and returns what it had
                log.warning("phase %s: interrupted after %d of %d trial(s); `--resume` continues it", phase.name,
                            len(ended), len(phase.points))
                break
            sdir.write_json(f"{phase.name}.done.json", {"rows": ended})
            if studies is not None and phase.kind == "search":
                studies.publish()
    channel.close()  # the inbox actor; the results table is written below
    results_path = sdir.write_results(rows)
    _wandb_summary(sweep, root, rows)
    return SweepOutcome(root, results_path, pd.DataFrame(rows), time.perf_counter() - t0, concurrent)


def write_plan(sdir: SweepDir, sweep: SweepConfig, *, source: str, resume: bool) -> None:
    """Record the sweep in `plan.json`; refuse a second start without --resume, a resume of a changed
    sweep file (it would mix two sweeps in one table), and a resume by another tkre version (Tune
    restores an interrupted phase's callbacks and searcher as that version pickled them, and no public
    API replaces them). Local and remote storage alike."""
    plan_hash = stable_hash(sweep.plan_dump())
    old = sdir.read_json(PLAN_FILE)
    if old is not None:
        if not resume:
            raise ConfigError(f"{source}: sweep {sweep.name!r} already has results in {sdir.uri}: "
                              "pass --resume to continue it (or change its name / storage_path)")
        if old.get("tkre_version") != __version__:  # Tune restores an interrupted phase from its pickles
            raise ConfigError(f"{source}: sweep {sweep.name!r} in {sdir.uri} was started by tkre "
                              f"{old.get('tkre_version')}, this is tkre {__version__}: an interrupted phase "
                              "restores the Tune state (callbacks, searcher) pickled by that version; resume it "
                              "with that version, or start the sweep under a new name")
        if old.get("plan_hash") != plan_hash:
            raise ConfigError(f"{source}: the sweep file changed since {sdir.uri} was started: resuming would "
                              "mix two sweeps; give it a new name")
    sdir.write_json(PLAN_FILE, {"plan_hash": plan_hash, "sweep": sweep.plan_dump(), "source": source,
                                "tkre_version": __version__})


"""W&B logging for sweeps: which mode to run in, and a Tune callback that logs each trial with `wandb`.

- Mode: the user's `WANDB_MODE` if set; else online when a key is configured -- `WANDB_API_KEY`, or
  an existing `wandb login` (the key it writes to the netrc file for the W&B host); else offline (runs
  kept on disk, `wandb sync` later). The netrc file is read with the standard library, not by
  `wandb.login(verify=False)`: with a key, that starts wandb's service process and asks the server
  for the user's name (5 s here, and no answer at all where the network drops packets).
- With W&B off, `wandb_hidden` keeps `import wandb` from running in the driver while Tune runs (see there).
- `WandbTrials` logs from the sweep driver with `wandb` itself, so the API key stays in the driver
  (see its docstring for why not Ray's `WandbLoggerCallback`), on a worker thread so that Tune never
  waits on W&B; what the runs carry besides Tune's results, and the sweep's summary run, are in
  `tkre.sweep.wandb_log`.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ray.tune import Callback

from tkre.results import FINISHED
from tkre.sweep.wandb_log import Worker, config_tags, log_row, run_tags

log = logging.getLogger(__name__)


def wandb_key_configured() -> bool:
    """True when W&B has an API key: WANDB_API_KEY, or the entry `wandb login` writes in the netrc file
    ($NETRC, else ~/.netrc or ~/_netrc) for the W&B host ($WANDB_BASE_URL, else api.wandb.ai). No network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    home = Path.home()
    candidates = [Path(os.environ["NETRC"])] if os.environ.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as e:  # a broken file: "no login"; the message may quote a key
            log.warning("W&B: could not read %s (%s, line %s): treating it as no `wandb login`", path,
                        type(e).__name__, getattr(e, "lineno", None))
            return False
        return bool(entry and entry[2])
    return False


def wandb_mode() -> str | None:
    """The mode a sweep logs in: WANDB_MODE, else None (online: a key is configured), else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return None if wandb_key_configured() else "offline"


def settle_wandb_mode() -> str | None:
    """`wandb_mode()`, made this process's WANDB_MODE when it is offline for want of a key: W&B's Tune
    callback (a new one, or one a restored Tuner unpickles) then skips its key check."""
    mode = wandb_mode()
    if mode == "offline" and not os.environ.get("WANDB_MODE"):
        log.info("W&B: no API key and no `wandb login`: runs stay offline on disk (`wandb sync` them later)")
        os.environ["WANDB_MODE"] = "offline"
    return mode


def wandb_on(enabled: bool) -> bool:
    """W&B logging is on: the sweep file asks for it, WANDB_MODE is not `disabled`, wandb is installed."""
    if not enabled or os.environ.get("WANDB_MODE") == "disabled":
        return False
    try:
        import wandb  # noqa: F401
    except ImportError:  # pragma: no cover
        log.warning("wandb not installed: W&B logging off")
        return False
    return True


#: the module of Ray's that imports wandb when Tune merely counts the callbacks it was given
RAY_WANDB_INTEGRATION = "ray.air.integrations.wandb"


@contextmanager
def wandb_hidden(hide: bool):
    """With `hide` (W&B off for this sweep) and wandb not yet imported: `import wandb` fails at once in
    this process for the block, and nothing imported in the block keeps that failure afterwards.

    Why: every `Tuner.fit` given callbacks records their classes for Ray's usage statistics, and to
    tell Ray's own from the user's it imports Ray's W&B integration, which imports wandb -- 0.5-2 s
    of a sweep's start on 2 cores (benchmarks/sweep_overhead.py), spent for nothing when W&B is off.
    A None entry in `sys.modules` is Python's documented way to make an import fail; Ray's integration
    then holds wandb=None, so it is dropped from `sys.modules` again after the block (a later import
    gets it afresh)."""
    if not hide or "wandb" in sys.modules:
        yield
        return
    integration_before = RAY_WANDB_INTEGRATION in sys.modules
    sys.modules["wandb"] = None
    try:
        yield
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]
        if not integration_before:
            sys.modules.pop(RAY_WANDB_INTEGRATION, None)


def wandb_callbacks(*, enabled: bool, project: str, group: str, directory: str | None, job_type: str | None = None,
                    sweep: dict | None = None) -> list:
    """Tune callbacks for W&B ([] when switched off or wandb is missing); `job_type`: the phase's kind,
    `sweep`: the sweep file (SweepConfig.model_dump()), for the trials' tags."""
    if not wandb_on(enabled):
        return []
    return [WandbTrials(project=project, group=group, directory=directory, mode=settle_wandb_mode(),
                        job_type=job_type, sweep=sweep)]


def _loggable(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a Tune result (a trial's row also carries strings and JSON: not curves)."""
    return {k: v for k, v in result.items() if k not in SKIPPED and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


#: Tune's bookkeeping fields, not measurements (training_iteration is the step)
SKIPPED = {"done", "training_iteration", "pid", "timestamp", "time_this_iter_s", "time_total_s",
           "time_since_restore", "iterations_since_restore", FINISHED}


class WandbTrials(Callback):
    """Tune callback (driver): one W&B run per trial -- id = the Tune trial id, the sweep's name as
    group, the phase's kind (search, evaluate, grid) as job type, the trial's dotted overrides as
    config, tags for variant, dataset, K, seed and backbone (and the generator once its row is in) --
    its numeric results logged at Tune's `training_iteration`; its row's fine-tuning and pre-training
    curves logged when it finishes (`tkre.sweep.wandb_log.log_row`); finished when the trial ends
    (exit code 1 when it failed).

    `wandb` runs in this driver process (several runs at once: `reinit="create_new"`, W&B >= 0.19.10),
    not in Ray actors: Ray's `WandbLoggerCallback` starts one logging actor per trial and hands it
    `WANDB_API_KEY` through a runtime env, which Ray writes to its session logs and dashboard. Here
    the key never leaves the driver's environment (or `wandb login`'s own file). Every wandb call runs
    on one worker thread (`tkre.sweep.wandb_log.Worker`): `wandb.init` takes seconds, and Tune warns
    about any callback that takes over 0.1 s per result; the callbacks only enqueue. The mode is
    settled again in `setup` (a restored sweep re-checks for a key). Console capture is off: the
    driver's console belongs to tkre's trial lines."""

    def __init__(self, *, project: str, group: str, directory: str | None = None, mode: str | None = None,
                 job_type: str | None = None, sweep: dict | None = None):
        self.project, self.group, self.directory, self.mode = project, group, directory, mode
        self.job_type, self.sweep = job_type, sweep
        self.runs: dict[str, Any] = {}  # trial id -> wandb run; touched on the worker thread only
        self.worker = Worker()

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment: no live runs
        return {**self.__dict__, "runs": {}, "worker": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.worker = Worker()

    def setup(self, **info: Any) -> None:
        self.mode = settle_wandb_mode()

    # ------------------------------------------------------------ on the worker thread
    def _start(self, trial_id: str, name: str, config: dict) -> None:
        if trial_id in self.runs:
            return
        import wandb

        from tkre.sweep.config import trial_overrides

        overrides = trial_overrides(config)
        try:
            tags = config_tags(self.sweep, overrides) if self.sweep else run_tags(overrides)
        except Exception as e:  # noqa: BLE001 -- a trial whose config does not build fails in Tune, not here
            log.debug("W&B tags of %s: %s", trial_id, e)
            tags = run_tags(overrides)
        settings = wandb.Settings(reinit="create_new", console="off", quiet=True)
        self.runs[trial_id] = wandb.init(
            project=self.project, group=self.group, job_type=self.job_type, tags=tags, id=trial_id, name=name,
            dir=self.directory, mode=self.mode, config=overrides, settings=settings)

    def _log(self, trial_id: str, values: dict[str, float], step: int | None, row: dict | None) -> None:
        run = self.runs.get(trial_id)
        if run is None:  # its wandb.init failed (warned once by the worker)
            return
        run.log(values, step=step)
        if row is not None:
            log_row(run, row)

    def _finish(self, trial_id: str | None, exit_code: int) -> None:
        for key in ([trial_id] if trial_id else list(self.runs)):
            run = self.runs.pop(key, None)
            if run is not None:
                run.finish(exit_code=exit_code)

    # ------------------------------------------------------------ Tune's callbacks: enqueue only
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.worker.submit(self._start, trial.trial_id, str(trial), dict(trial.config or {}))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.worker.submit(self._start, trial.trial_id, str(trial), dict(trial.config or {}))  # a restored trial
        self.worker.submit(self._log, trial.trial_id, _loggable(result), result.get("training_iteration"),
                           dict(result) if result.get(FINISHED) else None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.worker.submit(self._finish, trial.trial_id, 0)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.worker.submit(self._finish, trial.trial_id, 1)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.worker.submit(self._finish, None, 0)
        if not self.worker.drain(timeout=DRAIN_S):
            log.warning("W&B: runs still being written after %ds; they finish when the process exits", DRAIN_S)


#: how long the end of a phase waits for W&B to write its runs
DRAIN_S = 600

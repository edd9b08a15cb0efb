"""W&B logging for sweeps: which mode to run in, and a Tune callback that logs each trial with `wandb`.

- Mode: the user's `WANDB_MODE` if set; else online when a key is configured -- `WANDB_API_KEY`, or
  an existing `wandb login` (~/.netrc, wandb settings), asked of wandb itself without network
  (`wandb.login(prompt=False, verify=False)`); else offline (runs kept on disk, `wandb sync` later).
- `WandbTrials` logs from the sweep driver with `wandb` itself, so the API key stays in the driver
  (see its docstring for why not Ray's `WandbLoggerCallback`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)


def wandb_key_configured() -> bool:
    """True when W&B has an API key: WANDB_API_KEY or an existing `wandb login` (no network)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return False
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # wandb prints "API key is configured"
            return bool(wandb.login(prompt=False, verify=False))
    except Exception as e:  # noqa: BLE001 -- a broken settings file: behave as "no login"
        log.debug("wandb login check failed: %s", e)
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


def wandb_callbacks(*, enabled: bool, project: str, group: str, directory: str | None) -> list:
    """Tune callbacks for W&B ([] when switched off or wandb is missing)."""
    if not enabled or os.environ.get("WANDB_MODE") == "disabled":
        return []
    try:
        import wandb  # noqa: F401
    except ImportError:  # pragma: no cover
        log.warning("wandb not installed: W&B logging off")
        return []
    return [WandbTrials(project=project, group=group, directory=directory, mode=settle_wandb_mode())]


def _loggable(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a Tune result (a trial's row also carries strings and JSON: not curves)."""
    return {k: v for k, v in result.items() if k not in SKIPPED and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


#: Tune's bookkeeping fields, not measurements (training_iteration is the step)
SKIPPED = {"done", "training_iteration", "pid", "timestamp", "time_this_iter_s", "time_total_s",
           "time_since_restore", "iterations_since_restore", "row_complete"}


class WandbTrials(Callback):
    """Tune callback (driver): one W&B run per trial -- id = the Tune trial id, the sweep's name as
    group, the trial's dotted overrides as config -- its numeric results logged at Tune's
    `training_iteration`, finished when the trial ends (exit code 1 when it failed).

    `wandb` runs in this driver process (several runs at once: `reinit="create_new"`, W&B >= 0.19.10),
    not in Ray actors: Ray's `WandbLoggerCallback` starts one logging actor per trial and hands it
    `WANDB_API_KEY` through a runtime env, which Ray writes to its session logs and dashboard. Here
    the key never leaves the driver's environment (or `wandb login`'s own file). The mode is settled
    again in `setup` (a restored sweep re-checks for a key). Console capture is off: the driver's
    console belongs to tkre's trial lines."""

    def __init__(self, *, project: str, group: str, directory: str | None = None, mode: str | None = None):
        self.project, self.group, self.directory, self.mode = project, group, directory, mode
        self.runs: dict[str, Any] = {}

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment: no live runs
        return {**self.__dict__, "runs": {}}

    def setup(self, **info: Any) -> None:
        self.mode = settle_wandb_mode()

    def _run(self, trial: Any):
        run = self.runs.get(trial.trial_id)
        if run is None:
            import wandb

            from tkre.sweep.config import trial_overrides

            settings = wandb.Settings(reinit="create_new", console="off", quiet=True)
            run = self.runs[trial.trial_id] = wandb.init(
                project=self.project, group=self.group, id=trial.trial_id, name=str(trial), dir=self.directory,
                mode=self.mode, config=trial_overrides(trial.config or {}), settings=settings)
        return run

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._run(trial).log(_loggable(result), step=result.get("training_iteration"))

    def _finish(self, trial: Any, exit_code: int) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            run.finish(exit_code=exit_code)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, 0)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, 1)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for run in self.runs.values():
            run.finish()
        self.runs = {}

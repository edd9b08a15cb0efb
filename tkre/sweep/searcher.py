"""The search phase's Tune searcher: Ray's `OptunaSearch` on the sweep's stored study, telling Optuna
how each trial really ended.

Ray's `OptunaSearch` (storage=, study_name=) keeps the study in the sweep's database
(`tkre.sweep.study`), so it outlives the driver: `optuna.load_study` and optuna-dashboard open it, and a
resumed phase (Tune restores this searcher) keeps asking and telling the same study. Per-epoch dev
scores reach the study as intermediate values through `OptunaSearch.on_trial_result`.

`on_trial_complete` is replaced, not extended: Ray's tells Optuna COMPLETE with the last reported value
whenever one exists, so a trial that ASHA stopped after one epoch enters TPE as a finished trial scored
with its one-epoch dev-F1, and so does a trial that crashed after reporting. Here a trial that finished
its pipeline (its last result carries `row_complete`) is COMPLETE with its dev metric; one that Tune
ended before that (ASHA, the sweep's time budget) is PRUNED, with the intermediate values it reported
(Optuna takes the last as its value, as for trials its own pruners stop); one that failed is FAIL.
The Optuna trial of each Tune trial is found in the study itself (the one `suggest` just started),
not in the parent's private state; trials started in the moments before a kill that Tune never saved
are marked FAIL when the phase is restored. A remote sweep's database is published after each change.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tkre.sweep.study import StudyFile
from tkre.results import FINISHED

log = logging.getLogger(__name__)


class StudySearch(OptunaSearch):
    """`OptunaSearch` over a stored study; see the module docstring."""

    def __init__(self, *, study_file: StudyFile, study_name: str, space: dict[str, Any], metric: str, mode: str,
                 seed: int, points_to_evaluate: list[dict] | None = None):
        self.study_file, self.study_name = study_file, study_name
        self.trial_numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        storage = study_file.storage()
        if study_name in optuna.get_all_study_names(storage=storage):
            points_to_evaluate = None  # offered when the study began; not again
        super().__init__(space=space, metric=metric, mode=mode, points_to_evaluate=points_to_evaluate,
                         sampler=optuna.samplers.TPESampler(seed=seed), study_name=study_name, storage=storage)
        self.study = optuna.load_study(study_name=study_name, storage=storage)
        self._fail_unowned()  # a phase started afresh on a study that a killed run had begun

    def suggest(self, trial_id: str) -> dict | None:
        known = set(self.trial_numbers.values())
        config = super().suggest(trial_id)
        if trial_id not in self.trial_numbers:
            started = [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.number not in known]
            if len(started) == 1:
                self.trial_numbers[trial_id] = started[0]
            else:  # cannot happen while this searcher is the study's only writer
                log.warning("Optuna study %s: cannot tell which trial Tune trial %s is (%s)", self.study_name,
                            trial_id, started)
            self.study_file.publish()
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.trial_numbers.get(trial_id)
        if number is None:
            return
        value = (result or {}).get(self.metric)
        if error:
            state, value = TrialState.FAIL, None
        elif not (result or {}).get(FINISHED):
            state, value = TrialState.PRUNED, None  # ended by ASHA or the time budget
        elif value is None or not math.isfinite(value):
            state, value = TrialState.FAIL, None
        else:
            state = TrialState.COMPLETE
        try:
            self.study.tell(number, value, state=state)
        except (RuntimeError, ValueError) as e:  # told before a kill, Tune had not saved it: rerun, told again
            log.warning("Optuna study %s, trial %d: %s", self.study_name, number, e)
        self.study_file.publish()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fail_unowned()

    def _fail_unowned(self) -> None:
        """Running trials no Tune trial owns (asked after Tune last saved its state, before a kill) -> FAIL:
        no Tune trial will ever end them."""
        known = set(self.trial_numbers.values())
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in known:
                self.study.tell(t.number, state=TrialState.FAIL)
        self.study_file.publish()

"""The search phase's Optuna study (tkre.sweep.searcher, tkre.sweep.study), driven the way Tune drives a
searcher (suggest, per-epoch results, completion, save/restore), without a sweep: the study is stored in
the sweep's SQLite database and holds each trial as it ended -- complete, pruned with its intermediate
values, failed -- and a restored searcher continues the same study. The real search sweeps that leave
such a study are in test_sweep.py."""

from __future__ import annotations

import pickle

import optuna
import pyarrow.fs as pafs
import pytest
from optuna.trial import TrialState

from tkre.sweep.searcher import StudySearch
from tkre.sweep.study import STUDY_FILE, StudyFile, load_phase_study

SPACE = {"finetune.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}


def _searcher(sweep_dir, points=None) -> StudySearch:
    return StudySearch(study_file=StudyFile(str(sweep_dir)), study_name="demo/search-000", space=SPACE,
                       metric="dev_micro_f1", mode="max", seed=0, points_to_evaluate=points)


def _epochs(s: StudySearch, trial_id: str, values: list[float]) -> None:
    for step, v in enumerate(values, start=1):
        s.on_trial_result(trial_id, {"dev_micro_f1": v, "training_iteration": step})


def test_trials_stored_as_they_ended_and_a_restore_continues_the_study(tmp_path):
    s = _searcher(tmp_path, points=[{"finetune.lr": 1e-3}])
    assert s.suggest("done")["finetune.lr"] == 1e-3  # the offered start point comes first
    for t in ("stopped", "crashed"):
        s.suggest(t)
    _epochs(s, "done", [0.3, 0.5])
    s.on_trial_complete("done", {"dev_micro_f1": 0.5, "training_iteration": 3, "row_complete": True})
    _epochs(s, "stopped", [0.9])  # ASHA stops it after one epoch: Ray's searcher told COMPLETE 0.9 here
    s.on_trial_complete("stopped", {"dev_micro_f1": 0.9, "training_iteration": 1})
    _epochs(s, "crashed", [0.2])
    s.on_trial_complete("crashed", None, error=True)
    s.save(str(tmp_path / "searcher-state.pkl"))  # what Tune writes with its experiment state
    saved = dict(s.trial_numbers)
    s.suggest("lost")  # asked after the last save, then the driver is killed

    study = optuna.load_study(study_name="demo/search-000", storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    got = {t.number: t for t in study.trials}
    assert [got[i].state for i in range(4)] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                TrialState.RUNNING]
    assert got[0].value == 0.5 and got[0].intermediate_values == {1: 0.3, 2: 0.5}
    assert got[1].intermediate_values == {1: 0.9} and got[1].value == 0.9  # Optuna's own reading of a pruned trial
    assert study.best_trial.number == 0  # the stopped trial's one-epoch 0.9 is not a finished score

    # resume: Tune unpickles the searcher it pickled at the phase's start, then restores its saved state
    restored = pickle.loads(pickle.dumps(_searcher(tmp_path / "elsewhere")))
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    assert restored.study_name == "demo/search-000" and restored.trial_numbers == saved
    restored.suggest("after")
    _epochs(restored, "after", [0.7])
    restored.on_trial_complete("after", {"dev_micro_f1": 0.7, "training_iteration": 2, "row_complete": True})
    study = load_phase_study(str(tmp_path), "demo", "search-000")
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert study.best_value == 0.7  # one study, before and after the resume

    # a phase started afresh on the same study (killed before Tune saved anything) does not offer the
    # start point again
    again = _searcher(tmp_path, points=[{"finetune.lr": 1e-3}])
    again.suggest("next")
    assert len(load_phase_study(str(tmp_path), "demo", "search-000").trials) == 6
    assert load_phase_study(str(tmp_path), "demo", "search-999") is None
    assert load_phase_study(str(tmp_path / "empty"), "demo", "search-000") is None  # a sweep from before


def test_a_remote_sweeps_study_is_published_beside_its_results_and_fetched_on_resume(tmp_path, monkeypatch):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    subtree = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    monkeypatch.setattr("tkre.store.artifacts.resolve_filesystem", lambda uri: (subtree, uri.split("://", 1)[1]))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    uri = "mock://runs/sweeps/demo"
    s = _searcher(uri)
    assert s.study_file.local.startswith(str(tmp_path / "home" / ".cache"))  # the working copy is local
    s.suggest("t1")
    _epochs(s, "t1", [0.4])
    s.on_trial_complete("t1", {"dev_micro_f1": 0.4, "training_iteration": 2, "row_complete": True})
    published = bucket / "runs" / "sweeps" / "demo" / STUDY_FILE
    assert published.is_file() and StudyFile(uri).location == f"{uri}/{STUDY_FILE}"
    [t] = optuna.load_study(study_name="demo/search-000", storage=f"sqlite:///{published}").trials
    assert t.state == TrialState.COMPLETE and t.value == 0.4
    assert load_phase_study(uri, "demo", "search-000").best_value == 0.4  # what `tkre report <URI>` reads
    # another machine (no working copy) resuming the sweep starts from the published copy
    monkeypatch.setenv("HOME", str(tmp_path / "other_home"))
    other = StudyFile(uri)
    other.fetch()
    study = optuna.load_study(study_name="demo/search-000", storage=other.url)
    assert [t.value for t in study.trials] == [0.4]


@pytest.mark.parametrize("value, ok", [(1e-3, True), (1e-1, False)])
def test_start_from_base_offers_the_grid_points_own_values(tmp_path, value, ok):
    from tkre.errors import ConfigError
    from tkre.sweep.config import load_sweep, start_point

    path = tmp_path / "s.yaml"
    path.write_text(f"""name: s
base: {{finetune: {{lr: {value}}}}}
variants: {{fast: {{finetune.lr: 0.005}}}}
grid: {{variant: [fast]}}
points: [{{}}]
search:
  space: {{finetune.lr: {{type: loguniform, low: 1.0e-4, high: 1.0e-2}}}}
  start_from_base: true
""")
    if not ok:
        with pytest.raises(ConfigError, match=r"s.yaml:\d+: search.start_from_base: grid point \(base\) has "
                                              r"finetune.lr = 0.1, outside search.space.finetune.lr"):
            load_sweep(path)
        return
    sweep = load_sweep(path)
    assert start_point(sweep, {"variant": "fast"}) == {"finetune.lr": 0.005}  # the variant's own value
    # plan.json records the field only when set: a search sweep started before it existed still resumes
    assert sweep.plan_dump()["search"]["start_from_base"] is True
    off = sweep.model_copy(update={"search": sweep.search.model_copy(update={"start_from_base": False})})
    assert "start_from_base" not in off.plan_dump()["search"]
    assert start_point(sweep, {}) == {"finetune.lr": value}

"""The per-trial sweep line: which progress events are news, and how a trial's state reads."""

from __future__ import annotations

from tkre.console import describe, last_line, merge


def test_a_line_for_each_stage_epoch_and_tenth_of_rows_only():
    state: dict = {}
    news = [merge(state, e) for e in (
        {"stage": "split", "state": "reused"},
        {"stage": "scdg", "state": "computing"},
        {"unit": "rows", "done": 3, "total": 40},    # the first rows
        {"unit": "rows", "done": 4, "total": 40},    # 10 %
        {"unit": "rows", "done": 5, "total": 40},    # still the same tenth: no line
        {"stage": "finetune", "state": "computing"},
        {"unit": "step", "done": 1, "total": 6, "epoch": 1, "epochs": 2, "epoch_end": False, "info": {"loss": 1.5}},
        {"unit": "step", "done": 2, "total": 6, "epoch": 1, "epochs": 2, "epoch_end": False, "info": {"loss": 1.4}},
        {"unit": "step", "done": 3, "total": 6, "epoch": 1, "epochs": 2, "epoch_end": True,
         "info": {"train_loss": 1.45, "dev_micro_f1": 0.25}},
        {"unit": "step", "done": 4, "total": 6, "epoch": 2, "epochs": 2, "epoch_end": False, "info": {"loss": 1.2}},
    )]
    assert news == [True, True, True, True, False, True, True, False, True, True]
    assert describe(state) == "finetune: epoch 2/2 step 4/6 loss 1.2"
    merge(state, {"stage": "stage2", "state": "reused"})  # a new stage forgets the last one's progress
    assert describe(state) == "stage2: reused"


def test_failure_reason_is_the_traceback_last_line_without_colours():
    trace = "Traceback (most recent call last):\n  File \"x.py\"\n\x1b[36mray::_pipeline_task()\x1b[39m\nOSError: no model\n\n"
    assert last_line(trace) == "OSError: no model"


def test_search_trial_lines_leave_the_test_score_out():
    """A search selects on dev: its console lines show dev micro-F1 only; grid/evaluate lines show both.
    The setting survives Tune's pickling of the callback (tuner.pkl, a restored search)."""
    import io
    import pickle
    from types import SimpleNamespace

    from rich.console import Console

    from tkre.console import TrialLines

    def finished_line(lines: TrialLines) -> str:
        out = io.StringIO()
        lines._console = Console(file=out, width=200)
        trial = SimpleNamespace(trial_id="t1", config={}, last_result={"dev_micro_f1": 0.4, "test_micro_f1": 0.5})
        lines.on_trial_start(0, [], trial)
        lines.on_trial_complete(0, [], trial)
        return next(ln for ln in out.getvalue().splitlines() if "finished" in ln)

    assert "dev_micro_f1 0.4000 test_micro_f1 0.5000" in finished_line(TrialLines(live=False))
    search = pickle.loads(pickle.dumps(TrialLines(live=False, show_test=False)))
    line = finished_line(search)
    assert "dev_micro_f1 0.4000" in line and "test" not in line
    old = TrialLines(live=False)  # pickled before show_test existed: shows both, as it did
    old.__setstate__({"heartbeat_s": 60.0, "live_wanted": False})
    assert "test_micro_f1" in finished_line(old)


def test_progress_line_counts_and_extrapolates_this_runs_pace():
    from tkre.console import progress_line

    assert progress_line(2, 8, 2, 120.0, "grid") == "2 of 8 trials done (grid), ETA 6m00s"
    # a restored phase: 5 were done before, 1 ended in this run after 60 s -> 2 left at 60 s each
    assert progress_line(6, 8, 1, 60.0) == "6 of 8 trials done, ETA 2m00s"
    assert progress_line(8, 8, 3, 300.0, "evaluate") == "8 of 8 trials done (evaluate)"


def test_trial_lines_print_k_of_n_after_each_trial_end():
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from tkre.console import TrialLines

    lines = TrialLines(live=False, total=3, phase="grid")
    out = io.StringIO()
    lines._console = Console(file=out, width=200)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={}, last_result={}, status="RUNNING", error_file=None)
              for i in range(3)]
    for t in trials:
        lines.on_trial_start(0, trials, t)
    trials[0].status = "TERMINATED"
    lines.on_trial_complete(0, trials, trials[0])
    trials[1].status = "ERROR"
    lines.on_trial_error(0, trials, trials[1])
    counts = [ln for ln in out.getvalue().splitlines() if "trials done" in ln]
    assert counts[0].startswith("1 of 3 trials done (grid), ETA ") and counts[1].startswith("2 of 3 trials done")


def test_a_retried_trial_gets_one_line_with_the_attempt_and_the_reason(tmp_path):
    """A node lost mid-trial: Tune calls on_trial_recover (not on_trial_error) when the sweep allows
    retries; the console says so in one line, then `started` again, and counts the trial only once it ends."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from tkre.console import TrialLines

    error = tmp_path / "error.txt"
    error.write_text("Traceback ...\nray.train.WorkerGroupError: A worker health check failed\n")
    lines = TrialLines(live=False, total=1, phase="grid")
    out = io.StringIO()
    lines._console = Console(file=out, width=300)
    trial = SimpleNamespace(trial_id="t0", config={"point": {"variant": "tkre"}}, last_result={}, status="RUNNING",
                            error_file=str(error), num_failures=1, max_failures=2)
    lines.on_trial_start(0, [trial], trial)
    lines.on_trial_recover(0, [trial], trial)
    lines.on_trial_start(0, [trial], trial)
    text = out.getvalue().splitlines()
    assert text[1].startswith("trial t0 [tkre] RETRYING (attempt 2 of 3) after: ray.train.WorkerGroupError: "
                              "A worker health check failed (full trace: ")
    assert text[2].startswith("trial t0 [tkre] started") and not [ln for ln in text if "trials done" in ln]

"""What a user watches during a long run, fed by `tkre.progress` events.

- `TrialLines`: a Ray Tune `Callback` (Tune's extension point; the sweep runs Tune with `verbose=0`,
  so no status tables). One line per trial -- trial, variant, stage, progress (epoch and step, or
  rows), elapsed -- printed when a trial starts, changes stage or epoch, every `heartbeat_s` while it
  runs, fails and is retried (`RETRYING (attempt 2 of 3) after: <reason>`), and when it ends,
  followed by the phase's count: "k of N trials done, ETA ..." (N: the trials the phase will run;
  the ETA extrapolates this run's pace of finished trials). On a terminal the running trials' lines
  are also kept live (updated in place) below the printed ones.
- `ProgressBar`: a rich progress bar for `tkre pretrain` / `tkre finetune` (one bar per stage).

Both poll a `progress.Channel` on the driver: Tune calls `on_step_end` in its control loop; the bar
uses a thread. Under `tkre.cluster.quiet.quiet_console` the trial lines go to the terminal and
everything else the driver prints to the log file.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ray.tune import Callback

from tkre import progress
from tkre.errors import one_line, strip_ansi


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def last_line(text: str, limit: int = 300) -> str:
    """The last non-blank line of an error text (a traceback's message), without colour codes."""
    lines = [ln for ln in strip_ansi(text).splitlines() if ln.strip()]
    return one_line(lines[-1], limit) if lines else ""


def _error_reason(trial) -> str:
    """The last line of a trial's error.txt ("" without a local copy: the results table has the error)."""
    try:  # Tune writes error.txt next to the driver first and uploads it to storage later
        with open(trial.error_file, encoding="utf-8", errors="replace") as f:
            return last_line(f.read())
    except (OSError, TypeError):
        return ""


def describe(state: dict[str, Any]) -> str:
    """'stage: epoch 2/10 step 34/170 loss 0.512 dev_micro_f1 0.410' from a trial's merged events."""
    parts = [f"{state.get('stage') or 'starting'}:"]
    unit = state.get("unit")
    if state.get("state") and not unit:  # computing / reused
        parts.append(state["state"])
    if unit == "step":
        parts.append(f"epoch {state.get('epoch')}/{state.get('epochs')} step {state.get('done')}/{state.get('total')}")
    elif unit:
        parts.append(f"{unit} {state.get('done')}/{state.get('total')}")
    for k, v in (state.get("info") or {}).items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return " ".join(parts)


def merge(state: dict[str, Any], event: dict[str, Any]) -> bool:
    """Fold one event into a trial's state; True when it is news worth a line (new stage, an epoch
    begun or ended, another tenth of the rows)."""
    def key():
        return state.get("stage"), state.get("state"), state.get("epoch"), state.get("epoch_end"), _tenth(state)

    before = key()
    if "stage" in event and event["stage"] != state.get("stage"):
        for k in ("unit", "done", "total", "epoch", "epochs", "epoch_end", "info", "state"):
            state.pop(k, None)
    state.update({k: v for k, v in event.items() if k != "time"})
    return key() != before


def progress_line(done: int, total: int, ended_here: int, elapsed_s: float, phase: str | None = None) -> str:
    """'3 of 8 trials done (grid), ETA 12m30s': the remaining trials at this run's pace so far."""
    where = f" ({phase})" if phase else ""
    if done >= total:
        return f"{done} of {total} trials done{where}"
    eta = elapsed_s / ended_here * (total - done) if ended_here else None
    return f"{done} of {total} trials done{where}" + (f", ETA {_duration(eta)}" if eta is not None else "")


def _tenth(state: dict) -> int | None:
    if state.get("unit") != "rows" or not state.get("total"):
        return None
    return int(10 * state["done"] / state["total"])


class TrialLines(Callback):
    """Per-trial progress lines for a sweep (see the module docstring). The channel is the driver's
    current one (`progress.use`) when the experiment starts, so a restored Tuner gets today's."""

    def __init__(self, heartbeat_s: float = 60.0, live: bool | None = None, show_test: bool = True,
                 total: int | None = None, phase: str | None = None):
        """`show_test=False` for search phases: a search selects on dev, so its trials' lines leave the
        test score out (it stays in the results table, which the report keeps out of its tables).
        `total`: how many trials the phase runs (default: those Tune has created so far)."""
        self.heartbeat_s, self.live_wanted, self.show_test = heartbeat_s, live, show_test
        self.total, self.phase = total, phase
        self._init_runtime()

    def _init_runtime(self) -> None:
        self.channel: progress.Channel | None = None
        self.trials: dict[str, dict[str, Any]] = {}
        self._last_drain = 0.0
        self._live = None
        self._console = None
        self._started = time.time()
        self._ended_here = 0  # trials that ended in this run (a restored phase's earlier ones excluded)

    def __getstate__(self) -> dict:  # Tune pickles its run config (tuner.pkl): keep no handles
        return {"heartbeat_s": self.heartbeat_s, "live_wanted": self.live_wanted, "show_test": self.show_test,
                "total": self.total, "phase": self.phase}

    def __setstate__(self, state: dict) -> None:
        self.show_test, self.total, self.phase = True, None, None  # pickled before the fields existed
        self.__dict__.update(state)
        self._init_runtime()

    # ---------------------------------------------------------------- Tune hooks
    def setup(self, **info) -> None:
        from rich.console import Console

        self.channel = progress.current()
        self._started = time.time()
        from tkre.cluster.quiet import is_quiet, terminal_file

        self._console = Console(file=terminal_file(), soft_wrap=True, highlight=False)
        live = self._console.is_terminal if self.live_wanted is None else self.live_wanted
        if live:
            from rich.live import Live

            # under a quiet console sys.stdout is the log file: Live must not route it to the terminal
            self._live = Live("", console=self._console, refresh_per_second=2, transient=True,
                              redirect_stdout=not is_quiet(), redirect_stderr=not is_quiet())
            self._live.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        config = trial.config or {}
        variant = (config.get("point") or config).get("variant")  # grid points sit under "point"
        self.trials[trial.trial_id] = {"variant": variant, "started": time.time(), "printed": 0.0}
        self._line(trial.trial_id, "started")

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.time()
        if self.channel is None or now - self._last_drain < 0.5:
            return
        self._last_drain = now
        for event in self.channel.poll():
            state = self.trials.get(event.get("trial"))
            if state is not None and not state.get("ended") and merge(state, event):
                self._line(event["trial"])
        for trial_id, state in self.trials.items():
            if not state.get("ended") and now - state["printed"] >= self.heartbeat_s:
                self._line(trial_id)
        self._refresh_live()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        r = trial.last_result or {}
        keys = ("dev_micro_f1", "test_micro_f1") if self.show_test else ("dev_micro_f1",)
        scores = " ".join(f"{k} {r[k]:.4f}" for k in keys if isinstance(r.get(k), (int, float)))
        self._end(trial.trial_id, "finished" + (f" {scores}" if scores else ""))
        self._count(trials, trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = _error_reason(trial)
        self._end(trial.trial_id, f"FAILED: {reason or 'see the results table'} (full trace: {trial.error_file})")
        self._count(trials, trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """The trial failed and Tune runs it again (the sweep's `resources.max_failures`; e.g. its node
        was lost): one line with the reason; the new attempt prints `started` again."""
        failures, most = getattr(trial, "num_failures", 0) or 0, getattr(trial, "max_failures", 0) or 0
        attempt = f"attempt {failures + 1}" + (f" of {most + 1}" if most >= 0 else "")
        self.trials.setdefault(trial.trial_id, {"started": time.time(), "printed": 0.0})
        self._line(trial.trial_id, f"RETRYING ({attempt}) after: {_error_reason(trial) or 'an error'} "
                                   f"(full trace: {trial.error_file})")

    def on_experiment_end(self, trials, **info) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ---------------------------------------------------------------- output
    def _count(self, trials, trial) -> None:
        """'k of N trials done, ETA ...' after a trial ends (Tune passes every trial of the phase)."""
        self._ended_here += 1
        ended = {t.trial_id for t in trials or [] if getattr(t, "status", None) in ("TERMINATED", "ERROR")}
        done = len(ended | {trial.trial_id})
        total = max(self.total or 0, len(trials or []), done)
        self._console.print(progress_line(done, total, self._ended_here, time.time() - self._started, self.phase),
                            markup=False)

    def _end(self, trial_id: str, what: str) -> None:
        state = self.trials.setdefault(trial_id, {"started": time.time(), "printed": 0.0})
        state["ended"] = True
        self._line(trial_id, what)
        self._refresh_live()

    def _text(self, trial_id: str, what: str | None = None) -> str:
        state = self.trials[trial_id]
        variant = f" [{state['variant']}]" if state.get("variant") else ""
        return f"trial {trial_id}{variant} {what or describe(state)} | {_duration(time.time() - state['started'])}"

    def _line(self, trial_id: str, what: str | None = None) -> None:
        self.trials[trial_id]["printed"] = time.time()
        self._console.print(self._text(trial_id, what), markup=False)

    def _refresh_live(self) -> None:
        if self._live is not None:
            from rich.text import Text

            running = [self._text(t) for t, s in self.trials.items() if not s.get("ended")]
            self._live.update(Text("\n".join(running)))


class ProgressBar:
    """`with ProgressBar(): fit(...)` -- a rich bar per stage on the driver, advanced by the train
    loop's step events (and labelled by `progress.emit(stage=...)`). Sets the current channel."""

    def __init__(self, label: str, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.label = label
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.channel: progress.Channel | None = None
        self.state: dict[str, Any] = {"stage": label}
        self._task = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._use = None

    def _drain(self) -> None:
        while not self._stop.wait(0.5):
            self._show(self.channel.poll())

    def _show(self, events: list[dict]) -> None:
        for event in events:
            new_stage = "stage" in event and event["stage"] != self.state.get("stage")
            merge(self.state, event)
            if self._task is None or new_stage:
                self._task = self.progress.add_task(self.state["stage"], total=None)
            self.progress.update(self._task, completed=self.state.get("done") or 0, total=self.state.get("total"),
                                 description=describe(self.state))

    def __enter__(self) -> "ProgressBar":
        from tkre.cluster.runtime import init_ray

        init_ray()
        self.channel = progress.Channel.create()
        self._use = progress.use(self.channel)
        self._use.__enter__()
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._show(self.channel.drain())  # events that arrived after the last poll
        self.progress.stop()
        self._use.__exit__(*exc)
        self.channel.close()

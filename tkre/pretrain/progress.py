"""A rich progress bar on the driver, advanced by Ray Train reports (one tick per epoch).

Ray Train callbacks run on the controller actor, not on the driver, so the callback forwards each
report through a `ray.util.queue.Queue` that a driver thread drains into the progress bar.
"""

from __future__ import annotations

import threading

from ray.train import UserCallback


class QueueReportCallback(UserCallback):
    """Forwards rank 0's metrics of every report to a Ray queue (picklable: holds the queue handle)."""

    def __init__(self, q, label: str):
        self.q, self.label = q, label

    def after_report(self, run_context, metrics, checkpoint):
        m = metrics[0] if metrics else {}
        self.q.put({"label": self.label, **{k: v for k, v in m.items() if isinstance(v, (int, float))}})


class EpochProgress:
    """Context manager: `callback(label)` makes a Train callback; the bar advances per epoch."""

    def __init__(self, total_epochs: int, console=None, description: str = "pre-training"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from ray.util.queue import Queue

        self.queue = Queue()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task(description, total=total_epochs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def callback(self, label: str) -> QueueReportCallback:
        return QueueReportCallback(self.queue, label)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self._show(self.queue.get(timeout=0.5))
            except Exception:  # ray.util.queue.Empty on time-out
                continue

    def _show(self, m: dict) -> None:
        losses = " ".join(f"{k.removeprefix('heldout_')} {m[k]:.3f}" for k in
                          ("train_loss", "heldout_mslm_loss", "heldout_scl_loss", "dev_micro_f1") if k in m)
        self.progress.update(self.task, advance=1,
                             description=f"{m['label']} epoch {int(m.get('epoch', 0)) + 1} {losses}")

    def __enter__(self) -> "EpochProgress":
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        while not self.queue.empty():  # reports that arrived after the last poll
            self._show(self.queue.get_nowait())
        self.progress.stop()
        self.queue.shutdown()

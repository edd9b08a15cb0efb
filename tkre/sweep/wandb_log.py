"""What a sweep logs to W&B besides Tune's per-epoch results, and the thread that does the logging.

- `Worker`: one daemon thread that makes every `wandb` call in order. `wandb.init` takes seconds (it
  starts or joins W&B's core process) and a first `log` a few hundred ms; inside a Tune callback that
  would stall Tune's event loop (Tune warns above 0.1 s per result). The callbacks only enqueue.
- `run_tags`: the tags a trial's run carries -- variant, dataset, K, seed, backbone, generator -- so
  runs can be filtered in W&B without opening their config.
- `log_row`: a finished trial's curves from its row -- fine-tuning per epoch (`finetune/*` against
  `finetune/epoch`), pre-training per stage (`pretrain/<stage>/*` against `pretrain/<stage>/epoch`) --
  and its epoch history as a W&B Table.
- `log_sweep_summary`: one `summary` run per sweep: the results table as a W&B Table and as an
  Artifact (results.parquet), the report's plots as images and the report folder as an Artifact.
All of it works offline (no key): W&B keeps the runs on disk for `wandb sync`.
"""

from __future__ import annotations

import logging
import math
import queue
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from tkre.results import json_field

log = logging.getLogger(__name__)

#: the summary run's id starts with this (a trial's run has Tune's trial id)
SUMMARY_ID_PREFIX = "summary_"

#: long JSON columns kept out of the W&B results Table (they are in the results.parquet Artifact)
TABLE_SKIPPED = ("epoch_history", "pretrain_history", "experiment_config")


class Worker:
    """Runs submitted calls in order on one daemon thread (started on first use); a failing call is
    logged as a warning and the next one runs: W&B trouble never stops a sweep."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="tkre-wandb", daemon=True)
            self._thread.start()
        self._queue.put((fn, args, kwargs))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every call submitted so far has run; False when `timeout` ran out first."""
        if self._thread is None:
            return True
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def _loop(self) -> None:
        while True:
            fn, args, kwargs = self._queue.get()
            try:
                fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 -- logging must not end the sweep
                log.warning("W&B: %s failed: %s", getattr(fn, "__name__", fn), e)


def run_tags(values: dict[str, Any]) -> list[str]:
    """`variant:…`, `dataset:…`, `K:…`, `seed:…`, `backbone:…`, `generator:…` from a row or config
    values (keys variant, dataset, k, seed, backbone, edkg_generator, scdg_generator); W&B caps a tag
    at 64 characters."""
    tags = []
    for key, name in (("variant", "variant"), ("dataset", "dataset"), ("k", "K"), ("seed", "seed"),
                      ("backbone", "backbone")):
        value = values.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            tags.append(f"{name}:{int(value) if isinstance(value, float) else value}")
    for key in ("edkg_generator", "scdg_generator"):
        value = values.get(key)
        if isinstance(value, str) and value and f"generator:{value}" not in tags:
            tags.append(f"generator:{value}")
    return [t[:64] for t in tags]


def config_tags(sweep: dict, overrides: dict[str, Any]) -> list[str]:
    """`run_tags` of a trial before it runs: from its experiment config (no generator names yet)."""
    from tkre.sweep.config import SweepConfig, experiment_for

    cfg = experiment_for(SweepConfig.model_validate(sweep), overrides)
    return run_tags({"variant": overrides.get("variant"), "dataset": cfg.data.dataset, "k": cfg.data.k,
                     "seed": cfg.data.seed, "backbone": cfg.finetune.backbone})


def _numbers(record: dict) -> dict[str, float]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def log_row(run: Any, row: dict[str, Any]) -> None:
    """A finished trial's curves and epoch table (see the module docstring), and its final tags."""
    import wandb

    epochs = [h for h in json_field(row.get("epoch_history"), []) if isinstance(h, dict)]
    if epochs:
        run.define_metric("finetune/epoch")
        run.define_metric("finetune/*", step_metric="finetune/epoch")
        for i, h in enumerate(epochs):
            values = {f"finetune/{k}": v for k, v in _numbers(h).items() if k != "epoch"}
            run.log({**values, "finetune/epoch": int(h.get("epoch", i)) + 1})  # 1-based, as the report
        columns = sorted({k for h in epochs for k in h})
        run.log({"finetune/epoch_history": wandb.Table(columns=columns,
                                                       data=[[h.get(c) for c in columns] for h in epochs])})
    stages = json_field(row.get("pretrain_history"), {})
    for stage, history in (stages.items() if isinstance(stages, dict) else []):
        run.define_metric(f"pretrain/{stage}/epoch")
        run.define_metric(f"pretrain/{stage}/*", step_metric=f"pretrain/{stage}/epoch")
        for i, h in enumerate(h for h in history if isinstance(h, dict)):
            values = {f"pretrain/{stage}/{k}": v for k, v in _numbers(h).items() if k != "epoch"}
            run.log({**values, f"pretrain/{stage}/epoch": int(h.get("epoch", i)) + 1})
    tags = run_tags(row)
    run.tags = tuple(dict.fromkeys([*(run.tags or ()), *tags]))


def results_table(rows: Any):
    """The results as a W&B Table: one row per trial, JSON histories left out, values as W&B takes them."""
    import pandas as pd
    import wandb

    df = pd.DataFrame(rows).drop(columns=[c for c in TABLE_SKIPPED if c in rows], errors="ignore")
    df = df.astype(object).where(df.notna(), None)
    for c in df.columns:  # a column mixing types (None, str, number) goes in as text
        kinds = {type(v) for v in df[c] if v is not None}
        if len(kinds) > 1 or kinds - {int, float, str, bool}:
            df[c] = [None if v is None else str(v) for v in df[c]]
    return wandb.Table(dataframe=df)


def log_sweep_summary(*, project: str, group: str, directory: str | None, mode: str | None, rows: Any,
                      sweep_dir: str, report: bool = True) -> str | None:
    """The sweep's `summary` run (see the module docstring); returns its run directory."""
    import pandas as pd
    import wandb

    df = pd.DataFrame(rows)
    settings = wandb.Settings(reinit="create_new", console="off", quiet=True)
    run = wandb.init(project=project, group=group, job_type="summary", name=f"{group} summary", dir=directory,
                     id=f"{SUMMARY_ID_PREFIX}{uuid.uuid4().hex[:12]}",
                     mode=mode, tags=["summary"], config={"sweep": group, "sweep_dir": sweep_dir}, settings=settings)
    try:
        run.log({"results": results_table(df)})
        counts = df["status"].value_counts().to_dict() if "status" in df else {}
        run.summary.update({"trials": len(df), **{f"trials_{k}": int(v) for k, v in counts.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.parquet"
            df.to_parquet(path, index=False)
            results = wandb.Artifact(f"{group}-results", type="sweep-results",
                                     description=f"results.parquet of sweep {group} ({sweep_dir})")
            results.add_file(str(path))
            run.log_artifact(results)
            if report:
                _log_report(run, sweep_dir, group)
    finally:
        run.finish()
    return str(Path(run.dir).parent) if getattr(run, "dir", None) else None


def _log_report(run: Any, sweep_dir: str, group: str) -> None:
    import wandb

    from tkre.report.tables import write_report

    rep = write_report(sweep_dir)
    run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in rep.plots})
    artifact = wandb.Artifact(f"{group}-report", type="sweep-report", description=f"report.md and plots of {group}")
    artifact.add_dir(str(rep.markdown_path.parent))
    run.log_artifact(artifact)

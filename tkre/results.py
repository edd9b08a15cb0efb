"""The one results schema, and the sweep directory that holds it.

    ResultRow   one experiment, built by `tkre.pipeline.run_experiment`
    TrialRow    one sweep trial: what the sweep knows (sweep, phase, trial, variant, status, error,
                selected_from, overrides, search params) + the trial's whole ResultRow
    SweepDir    `<storage>/sweeps/<name>/` on a local disk or any pyarrow.fs URI (s3://, gs://, ...):
                results.parquet, plan.json, `<phase>.done.json` markers, the event log

The table (`results.parquet`) is the rows flattened: a dict field `f` becomes one column per key,
`f.<key>` (`artifact.finetune`, `seconds.edkg`, `param.pretrain.tau`), so the report reads plain
columns. Every row carries `schema_version`; a table written under another version is refused with
a clear message instead of being misread. Fractions (F1) are in [0, 1]; reports print percentages.
The sweep keeps the pipeline's row whole (no key lists) and the report never re-derives from a
trial's config what the sweep knew (its variant comes from the sweep file, through the row).

Object stores cannot append: on remote storage every event is its own small object under
`events/`; on a local disk events are appended to `events.jsonl` (an flock per write).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

from tkre import __version__
from tkre.store import artifacts
from tkre.errors import ConfigError

RESULTS_SCHEMA_VERSION = 1
STAGES = ("split", "edkg", "scdg", "stage1", "stage2", "finetune")

RESULTS_FILE = "results.parquet"
PLAN_FILE = "plan.json"
EVENTS_FILE = "events.jsonl"
EVENTS_DIR = "events"  # remote storage: one object per event
#: the field of a trial's last Tune result (its results row) that says its pipeline finished
#: (tkre.sweep.trial.run_trial); a trial Tune ended before that has none
FINISHED = "row_complete"


class _FlatModel(BaseModel):
    """A row whose dict fields flatten into `field.key` columns (and back)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def _dict_fields(cls) -> set[str]:
        return {name for name, f in cls.model_fields.items()
                if getattr(f.annotation, "__origin__", None) is dict or f.annotation is dict}

    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dicts = self._dict_fields()
        for name, value in self.model_dump().items():
            if name in dicts:
                out.update({f"{name}.{k}": v for k, v in value.items()})
            else:
                out[name] = value
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]):
        """The row from a flat dict (a Tune result, a table row); keys the schema does not name are ignored."""
        data: dict[str, Any] = {}
        dicts = cls._dict_fields()
        for name in cls.model_fields:
            if name in dicts:
                prefix = f"{name}."
                data[name] = {k[len(prefix):]: _plain(v) for k, v in flat.items() if k.startswith(prefix)}
            elif name in flat:
                data[name] = _plain(flat[name])
        return cls.model_validate(data)


def _plain(value: Any) -> Any:
    """NaN (pandas' missing value) -> None; numpy scalars -> Python scalars."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


class ResultRow(_FlatModel):
    """One experiment's result, built by the pipeline (a typed, versioned row)."""

    schema_version: int = RESULTS_SCHEMA_VERSION
    tkre_version: str = __version__
    experiment: str = Field(..., description="ExperimentConfig.name (a sweep sets `<sweep>-<variant>`)")
    variant: str | None = Field(None, description="the sweep file's variant name (None outside sweeps)")
    dataset: str
    data_hash: str
    k: int
    seed: int
    protocol: str
    backbone: str
    encoder: str = Field(..., description="the encoder pre-training/fine-tuning started from")
    masking: str | None = Field(None, description="pre-training masking (None: no pre-training ran)")
    edkg_generator: str | None = Field(None, description="EDKG explanation generator (None: stage off)")
    scdg_generator: str | None = Field(None, description="SCDG sample generator, or the control in its place "
                                       "(oracle, shuffled(<generator>), golden_repeat(<generator>)); None: stage off")
    synthetic_source: str | None = Field(None, description="scdg.source: llm, oracle, shuffled or golden_repeat "
                                         "(None: SCDG off)")
    relations: int = Field(..., description="relations in the K-shot training split")
    synthetic_asked: int = Field(0, description="SCDG samples asked, all relations together")
    synthetic_kept: int = Field(0, description="SCDG samples kept after validation")
    synthetic_used: int = Field(0, description="synthetic samples fine-tuning trained on (after its cap)")
    dev_micro_f1: float | None = None
    dev_macro_f1: float | None = None
    test_micro_f1: float | None = None
    test_macro_f1: float | None = None
    metric_excluded_label: str | None = Field(None, description="the class micro-F1 leaves out (the dataset's "
                                              "no-relation class); None with F1: a label set without one, "
                                              "micro-F1 over all classes")
    best_epoch: int | None = Field(None, description="the kept fine-tuning epoch, 0-based (0 = the first epoch)")
    finetune_budget: str | None = Field(None, description="fine-tuning's budget: `10 epochs`, `120 steps` or "
                                        "`convergence (patience 3, max 30 epochs)`")
    finetune_steps: int | None = Field(None, description="optimizer steps fine-tuning took")
    finetune_epochs_run: int | None = Field(None, description="fine-tuning epochs run (a partial last one counts)")
    best_step: int | None = Field(None, description="optimizer steps taken when the kept checkpoint was written")
    stopped_on_patience: bool | None = Field(None, description="fine-tuning stopped because dev micro-F1 stopped "
                                             "improving (budget convergence): it converged")
    epoch_history: str = Field("[]", description="JSON list of per-epoch fine-tuning metrics")
    pretrain_history: str = Field("{}", description="JSON {stage1|stage2: per-epoch pre-training metrics} of the "
                                  "stages that ran (train_loss, heldout_mslm_loss, heldout_scl_loss)")
    experiment_config: str = Field(..., description="the full ExperimentConfig as JSON")
    artifact: dict[str, str | None] = Field(default_factory=dict, description="stage -> artifact key")
    reused: dict[str, bool | None] = Field(default_factory=dict, description="stage -> found in the store")
    seconds: dict[str, float] = Field(default_factory=dict, description="stage (+ load, total) -> wall s")
    edkg: dict[str, Any] = Field(default_factory=dict, description="EDKG generation statistics "
                                 "(tkre.generate.stats: tokens, cost, quality); empty when the stage is off")
    scdg: dict[str, Any] = Field(default_factory=dict, description="SCDG generation statistics (asked, parsed, "
                                 "valid, kept, acceptance, tokens, cost, quality); empty when the stage is off")


Status = Literal["ok", "error", "early_stopped"]


class TrialRow(_FlatModel):
    """One sweep trial: the sweep's own fields plus the trial's ResultRow (None when it did not finish)."""

    schema_version: int = RESULTS_SCHEMA_VERSION
    tkre_version: str = __version__
    sweep: str
    phase: str
    trial_id: str
    variant: str | None = None
    status: Status
    error: str | None = None
    selected_from: str | None = Field(None, description="evaluate phase: the search trial it re-runs")
    overrides: str = Field("{}", description="the trial's dotted overrides (JSON)")
    param: dict[str, Any] = Field(default_factory=dict, description="search phases: sampled parameters")
    training_iteration: int | None = None
    last_dev_micro_f1: float | None = Field(None, description="the last dev micro-F1 Tune saw (early stops)")
    result: ResultRow | None = None

    def to_flat(self) -> dict[str, Any]:
        own = {k: v for k, v in super().to_flat().items() if k != "result"}
        if self.result is None:
            return {**own, "dev_micro_f1": self.last_dev_micro_f1}
        return {**self.result.to_flat(), **own}

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "TrialRow":
        row = super().from_flat({k: v for k, v in flat.items() if k != "result"})
        if flat.get("experiment_config") is not None and flat.get("status") == "ok":
            row.result = ResultRow.from_flat(flat)
        return row


def json_field(text: Any, empty: Any) -> Any:
    """A row's JSON-text field (`epoch_history`, `pretrain_history`) decoded; `empty` when missing or not JSON."""
    if not isinstance(text, str) or not text:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return empty


def columns() -> list[str]:
    """Every non-dict column of a results table, in order."""
    dicts = ResultRow._dict_fields() | TrialRow._dict_fields() | {"result"}
    names = list(dict.fromkeys([*TrialRow.model_fields, *ResultRow.model_fields, "dev_micro_f1"]))
    return [n for n in names if n not in dicts]


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Flat rows -> a table with every schema column present (missing values as None)."""
    df = pd.DataFrame(rows)
    for name in columns():
        if name not in df:
            df[name] = None
    return df


# ------------------------------------------------------------------------------- the sweep dir
class SweepDir:
    """A sweep's folder on local disk or a pyarrow.fs URI; one code path for both."""

    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self.remote = artifacts.is_remote(self.uri)
        if self.remote:
            self.fs, root = artifacts.resolve_filesystem(self.uri)
            self.root = root.rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(artifacts.local_path(self.uri))

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def location(self, name: str) -> str:
        """Where `name` lives, as the user would write it (a URI stays a URI)."""
        return artifacts.join_uri(self.uri, name) if self.remote else self._path(name)

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def read_json(self, name: str) -> dict | None:
        if not self.exists(name):
            return None
        with self.fs.open_input_stream(self._path(name)) as f:
            return json.loads(f.read().decode("utf-8"))

    def write_json(self, name: str, obj: Any) -> str:
        if not self.remote:
            from tkre.io import atomic_write_json

            atomic_write_json(Path(self._path(name)), obj)
        else:  # an object PUT is atomic: readers see the old or the new object
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(self._path(name)) as f:
                f.write((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
        return self.location(name)

    def write_results(self, rows: list[dict[str, Any]]) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(rows_frame(rows), preserve_index=False)
        if self.remote:
            self.fs.create_dir(self.root, recursive=True)
            pq.write_table(table, self._path(RESULTS_FILE), filesystem=self.fs)
        else:
            from tkre.io import atomic_path

            with atomic_path(Path(self._path(RESULTS_FILE))) as tmp:
                pq.write_table(table, tmp)
        return self.location(RESULTS_FILE)

    def read_results(self) -> pd.DataFrame:
        import pyarrow.parquet as pq

        if not self.exists(RESULTS_FILE):
            raise ConfigError(f"{self.uri}: no {RESULTS_FILE} (is this a sweep directory? run `tkre sweep` first)")
        try:
            df = pq.read_table(self._path(RESULTS_FILE), filesystem=self.fs).to_pandas()
        except (pa.ArrowException, OSError) as e:  # truncated, not Parquet, unreadable
            raise ConfigError(f"{self.location(RESULTS_FILE)}: not a readable results table "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from e
        if "schema_version" not in df and len(df.columns) and "trial_id" not in df:
            raise ConfigError(f"{self.location(RESULTS_FILE)}: not a tkre results table (no schema_version or "
                              f"trial_id column; columns: {', '.join(map(str, list(df.columns)[:6]))})")
        versions = set(df["schema_version"].dropna().astype(int)) if "schema_version" in df else set()
        if versions != {RESULTS_SCHEMA_VERSION} and len(df):
            raise ConfigError(f"{self.location(RESULTS_FILE)}: results schema version "
                              f"{sorted(versions) or 'none'}, this tkre reads version {RESULTS_SCHEMA_VERSION}: report it with "
                              "the tkre version that wrote it (its rows say which: tkre_version)")
        for name in columns():
            if name not in df:
                df[name] = None
        return df

    def append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=str)
        if self.remote:
            name = f"{EVENTS_DIR}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
            self.fs.create_dir(self._path(EVENTS_DIR), recursive=True)
            with self.fs.open_output_stream(self._path(name)) as f:
                f.write(line.encode())
            return
        path = Path(self._path(EVENTS_FILE))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def upload(self, local_dir: Path, name: str) -> str:
        """Copy a local folder to `<sweep-dir>/<name>` (used for reports of remote sweeps)."""
        dest = self._path(name)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local_dir), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        return self.location(name)

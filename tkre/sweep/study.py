"""Where a sweep's Optuna studies live, and how to open them: one SQLite database per sweep.

Each search phase is one Optuna study, `<sweep name>/<phase>` (e.g. `cpu_semeval_search/search-000`),
in Optuna's RDB storage on SQLite, `<sweep dir>/optuna.db`: `optuna.load_study(study_name=...,
storage="sqlite:///<sweep dir>/optuna.db")` opens it with every trial (pruned ones included), and
`optuna-dashboard sqlite:///<sweep dir>/optuna.db` shows it (docs/optuna.md). A resumed search keeps
writing to the same study (`tkre.sweep.searcher`).

A remote sweep (s3://, gs://) cannot hold a SQLite database that is written in place: its working copy
is local, under `~/.cache/tkre/optuna/<hash of the sweep URI>/optuna.db`, and is copied beside the
results (`<sweep dir>/optuna.db`) whenever a trial is asked for or ends. A resume on a machine without
the working copy starts from that copy (fetched before Tune restores the searcher, which reopens the
working copy's path: the same home directory, as on head nodes started from one image). One database file (not Optuna's journal)
for both, so the copy a user downloads opens with the same `sqlite:///` command.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from tkre.io import stable_hash
from tkre.results import SweepDir

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"


def study_name(sweep_name: str, phase: str) -> str:
    """The Optuna study of one search phase."""
    return f"{sweep_name}/{phase}"


class StudyFile:
    """A sweep's Optuna database: its local file (the working copy for a remote sweep) and, for a
    remote sweep, its copy beside the results. Plain strings inside: Tune pickles it with the searcher."""

    def __init__(self, sweep_uri: str):
        self.sweep_uri = str(sweep_uri)
        sdir = SweepDir(self.sweep_uri)
        self.remote = sdir.remote
        self.local = str(Path.home() / ".cache" / "tkre" / "optuna" / stable_hash(sdir.uri, 12) / STUDY_FILE
                         if sdir.remote else Path(sdir.root) / STUDY_FILE)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.local}"

    @property
    def location(self) -> str:
        """Where a user finds the database (the copy beside the results for a remote sweep)."""
        return study_location(self.sweep_uri)

    def storage(self):
        """Optuna's RDB storage on this file (created on first use)."""
        import optuna

        Path(self.local).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(self.url)

    def fetch(self) -> None:
        """A remote sweep without a local working copy (a resume elsewhere) starts from its published copy."""
        if self.remote and not Path(self.local).exists():
            if _download(SweepDir(self.sweep_uri), Path(self.local)):
                log.info("Optuna studies: continuing from %s", self.location)

    def publish(self) -> None:
        """Copy the working copy of a remote sweep's database beside its results (no-op when local)."""
        if self.remote and Path(self.local).exists():
            import pyarrow.fs as pafs

            sdir = SweepDir(self.sweep_uri)
            sdir.fs.create_dir(sdir.root, recursive=True)
            pafs.copy_files(self.local, f"{sdir.root}/{STUDY_FILE}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=sdir.fs)


def _download(sdir: SweepDir, dest: Path) -> bool:
    import pyarrow.fs as pafs

    if not sdir.exists(STUDY_FILE):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    pafs.copy_files(f"{sdir.root}/{STUDY_FILE}", str(tmp), source_filesystem=sdir.fs,
                    destination_filesystem=pafs.LocalFileSystem())
    tmp.replace(dest)
    return True


def study_location(sweep_dir: str) -> str:
    """Where a sweep's Optuna database is, as the user would write it."""
    sdir = SweepDir(sweep_dir)
    return sdir.location(STUDY_FILE)


def load_phase_study(sweep_dir: str, sweep_name: str, phase: str):
    """The stored Optuna study of a search phase, or None (a sweep written before studies were stored).
    A remote sweep's database is read from a downloaded copy."""
    import optuna

    sdir = SweepDir(sweep_dir)
    if sdir.remote:
        path = Path(tempfile.mkdtemp(prefix="tkre-optuna-")) / STUDY_FILE
        if not _download(sdir, path):
            return None
    else:
        path = Path(sdir.root) / STUDY_FILE
        if not path.is_file():
            return None
    name = study_name(sweep_name, phase)
    if name not in optuna.get_all_study_names(storage=f"sqlite:///{path}"):
        return None
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


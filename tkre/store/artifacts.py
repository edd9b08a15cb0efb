"""Content-addressed artifact store: each pipeline stage's output, reused when its inputs match.

Layout: `<storage>/artifacts/<stage>/<key>/` holding the stage's files plus `manifest.json`
(stage, key, config subset, input keys, tkre version, seconds, and the stage's result under
`summary`; `tkre.store.manifest`). It is the folder's only manifest, written here and by the per-stage
commands (`tkre generate ...`), never by the stages themselves.
`key = stable_hash(stage, config subset that affects the stage, input artifact keys, tkre version)`,
so a seed sweep over fine-tuning reuses one generation run and a tau sweep reuses stage 1.

An artifact is *complete* when its manifest exists; the manifest is written last:
- local storage (a plain directory or a `file://` URI): the stage writes into a temporary directory
  beside the target, the manifest is written there, then the directory is renamed into place;
- remote storage (any other `pyarrow.fs` URI: `s3://`, `gs://`, ...): the stage writes into a local
  staging directory, the files are uploaded with `pyarrow.fs.copy_files`, and the manifest is
  uploaded last. Readers download a complete artifact into their node's cache before using it: one
  download per node (a node-local file lock), checked against the file sizes its manifest lists.

Hand-overs between stages carry a reference (`ArtifactStore.ref` -> `StoredDir`), never a path of
the node that asked: whatever runs a stage (a Train worker, a Ray Data actor, on any node) opens it
with `tkre.store.refs.materialise`. Local storage hands over the store's own path (no copy).

Concurrency: trials that ask for the same artifact compute it once. For local/NFS storage we take an
exclusive `fcntl.flock` on `<storage>/artifacts/<stage>/.locks/<key>.lock` -- it needs no running
service, it is released by the kernel when a process dies (so a SIGKILLed trial never leaves a stale
lock), and it works across the nodes of a cluster that share an NFS mount. Object stores have no
locks; for them we hold a named Ray actor lock (`tkre.store.locks.ray_actor_lock`, one table per Ray cluster) when Ray
is running, falling back to a node-local flock otherwise. Whoever gets the lock second finds the
manifest and reuses the artifact. An actor lock is a short lease (`lock_lease_s`, default 60 s, or
`TKRE_LOCK_LEASE_S`) renewed by a heartbeat thread while its holder lives: a holder killed without
running its `finally` (the watchdog's `ray.cancel(force=True)`, a lost node) frees it within a lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.fs as pafs

from tkre import __version__, progress
from tkre.errors import ConfigError, TkreError
from tkre.io import stable_hash
from tkre.store.locks import DEFAULT_LEASE_S, file_lock, ray_actor_lock
from tkre.store.manifest import MANIFEST, make_manifest, read_manifest, write_manifest

log = logging.getLogger(__name__)



def artifact_key(stage: str, config: Any, inputs: dict[str, str] | None = None,
                 version: str = __version__) -> str:
    """Stable key of a stage output: hash of (stage, config subset, input keys, tkre version)."""
    return stable_hash({"stage": stage, "config": config, "inputs": dict(sorted((inputs or {}).items())),
                        "tkre": version})


def is_remote(storage: str) -> bool:
    """True for URIs that are not plain local paths (`file://` counts as local)."""
    return "://" in storage and not storage.startswith("file://")


def local_path(storage: str) -> Path:
    """The local directory a plain path or `file://` URI names (user home expanded)."""
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    return Path(os.path.expanduser(storage)).resolve()


def resolve_filesystem(storage: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a storage URI; a clear error for unknown schemes."""
    try:
        return pafs.FileSystem.from_uri(storage)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for unknown schemes or no credentials
        raise ConfigError(f"storage_path {storage!r}: not a usable pyarrow.fs URI ({e})") from None


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


@dataclass
class Artifact:
    """A complete artifact, available on this machine at `path`."""

    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]
    reused: bool  # True when found complete, False when this call computed it
    uri: str  # where it lives in the store
    seconds: float = 0.0  # wall time of this call (lookup + compute/download)

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})


@dataclass(frozen=True)
class StoredDir:
    """A folder inside a stored artifact, as a reference any node can open (`local()`); what stages
    hand each other on remote storage (`ArtifactStore.ref`)."""

    storage: str  # the store's storage URI (its `storage_path`)
    stage: str
    key: str
    sub: str = ""  # a folder inside the artifact, e.g. "checkpoint"

    def __str__(self) -> str:
        return join_uri(self.storage, "artifacts", self.stage, self.key, *([self.sub] if self.sub else []))

    def local(self) -> str:
        """The folder on this node: the artifact downloaded into this node's cache (once per node)."""
        art = ArtifactStore(self.storage).find(self.stage, self.key)
        if art is None:
            raise TkreError(f"artifact {self.stage}/{self.key} is not in the store {self.storage} "
                            f"(handed over as {self}): was it deleted?")
        return str(art.path / self.sub) if self.sub else str(art.path)


class ArtifactStore:
    """Artifacts under `<storage>/artifacts`; `storage` is a local directory or a pyarrow.fs URI."""

    def __init__(self, storage: str, *, cache_dir: str | None = None, lock_timeout_s: float = 6 * 3600,
                 slots: dict[str, int] | None = None, lock_lease_s: float | None = None):
        self.storage = storage
        self.slots = dict(slots or {})
        self.remote = is_remote(storage)
        self.lock_timeout_s = lock_timeout_s
        self.lock_lease_s = lock_lease_s or float(os.environ.get("TKRE_LOCK_LEASE_S", DEFAULT_LEASE_S))
        if self.remote:
            self.fs, root = resolve_filesystem(storage)
            self.root = root.rstrip("/") + "/artifacts"
            cache = cache_dir or os.path.join(os.path.expanduser("~/.cache/tkre/store/artifacts"),
                                              stable_hash(storage, 12))
            self.local_root = Path(cache)
        else:
            self.fs = pafs.LocalFileSystem()
            self.local_root = local_path(storage) / "artifacts"
            self.root = str(self.local_root)

    # ------------------------------------------------------------------ paths
    def uri(self, stage: str, key: str) -> str:
        if self.remote:
            return f"{self.storage.rstrip('/')}/artifacts/{stage}/{key}"
        return str(self.local_root / stage / key)

    def ref(self, stage: str, key: str, sub: str = "") -> str | StoredDir:
        """What a stage hands the next one: the folder's path for local storage (every node of a cluster
        on local storage shares it, as NFS), a `StoredDir` reference for remote storage."""
        if self.remote:
            return StoredDir(self.storage, stage, key, sub)
        return str(self._local_dir(stage, key) / sub) if sub else str(self._local_dir(stage, key))

    def _remote_dir(self, stage: str, key: str) -> str:
        return f"{self.root}/{stage}/{key}"

    def _local_dir(self, stage: str, key: str) -> Path:
        return self.local_root / stage / key

    # ---------------------------------------------------------------- lookups
    def find(self, stage: str, key: str) -> Artifact | None:
        """The complete artifact (downloaded into the local cache if remote), or None."""
        local = self._local_dir(stage, key)
        manifest = read_manifest(local)
        remote = self._remote_dir(stage, key) if self.remote else ""
        stored = self.remote and self.fs.get_file_info(f"{remote}/{MANIFEST}").type == pafs.FileType.File
        if manifest is not None:
            if self.remote and not stored:  # the store lost it (emptied, a new bucket at the same URI)
                check_files(local, manifest, f"artifact {stage}/{key} in this node's cache")
                log.warning("artifact %s/%s is in this node's cache but not in %s: uploading this copy",
                            stage, key, self.storage)
                self._upload(local, remote, manifest)
            return Artifact(stage, key, local, manifest, True, self.uri(stage, key))
        if not stored:
            return None
        # one download per node: the workers of a node wait for the first one's and reuse it
        with file_lock(_ensure(local.parent / ".locks") / f"{key}.download.lock", timeout_s=self.lock_timeout_s):
            if read_manifest(local) is None:
                self._download(remote, local, f"{stage}/{key}")
        manifest = read_manifest(local)
        return Artifact(stage, key, local, manifest or {}, True, self.uri(stage, key))

    def _download(self, remote: str, local: Path, name: str) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", suffix=".download", dir=_ensure(local.parent)))
        try:
            pafs.copy_files(remote, str(tmp), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            check_files(tmp, read_manifest(tmp) or {}, f"artifact {name} downloaded from {self.storage}")
            _rename_into_place(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def list(self, stage: str | None = None) -> list[dict[str, Any]]:
        """Manifests of every complete artifact (of one stage, or all)."""
        sel = pafs.FileSelector(self.root if stage is None else f"{self.root}/{stage}", recursive=True,
                                allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(sel):
            if info.base_name == MANIFEST and "/." not in info.path.replace(self.root, ""):
                with self.fs.open_input_file(info.path) as f:
                    out.append(json.loads(f.read().decode()))
        return out

    # ------------------------------------------------------------------ build
    def get_or_create(self, stage: str, key: str, build: Callable[[Path], dict[str, Any] | None], *,
                      config: Any = None, inputs: dict[str, str] | None = None) -> Artifact:
        """Return the artifact `stage/key`, running `build(out_dir)` once if it is not in the store.

        `build` writes its files into `out_dir` (an empty directory) and returns a summary dict
        stored in the manifest. Concurrent callers with the same key wait on a lock and reuse.
        """
        start = time.perf_counter()
        found = self.find(stage, key)
        if found is not None:
            found.seconds = time.perf_counter() - start
            log.info("artifact %s/%s: reused (%s)", stage, key, found.uri)
            progress.emit(stage=stage, state="reused")
            return found
        wait_start = time.perf_counter()
        with self._lock(stage, key):
            waited = time.perf_counter() - wait_start
            found = self.find(stage, key)  # another trial may have built it while we waited
            if found is not None:
                found.seconds = time.perf_counter() - start
                log.info("artifact %s/%s: reused after waiting %.1fs for another trial", stage, key, waited)
                progress.emit(stage=stage, state="reused")
                return found
            log.info("artifact %s/%s: computing", stage, key)
            progress.emit(stage=stage, state="computing")
            art = self._build(stage, key, build, config=config, inputs=inputs)
        art.seconds = time.perf_counter() - start
        return art

    def _build(self, stage: str, key: str, build: Callable[[Path], dict[str, Any] | None], *,
               config: Any, inputs: dict[str, str] | None) -> Artifact:
        local = self._local_dir(stage, key)
        for leftover in _ensure(local.parent).glob(f".{key}.*.tmp"):  # we hold the key's lock: a dead
            shutil.rmtree(leftover, ignore_errors=True)                  # builder's half-done output
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=local.parent))
        try:
            t0 = time.perf_counter()
            summary = build(tmp) or {}
            manifest = make_manifest(stage, summary, key=key, config=config, inputs=inputs,
                                     seconds=time.perf_counter() - t0)
            manifest["files"] = file_sizes(tmp)
            if self.remote:
                self._upload(tmp, self._remote_dir(stage, key), manifest)
            write_manifest(tmp, manifest)
            _rename_into_place(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Artifact(stage, key, local, manifest, False, self.uri(stage, key))

    def _upload(self, src: Path, dest: str, manifest: dict[str, Any]) -> None:
        """Upload every file, then the manifest (so a reader never sees a half-uploaded artifact)."""
        self.fs.create_dir(dest, recursive=True)
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                rel = p.relative_to(src).as_posix()
                parent = f"{dest}/{rel}".rsplit("/", 1)[0]
                self.fs.create_dir(parent, recursive=True)
                pafs.copy_files(str(p), f"{dest}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{dest}/{MANIFEST}") as f:
            f.write((json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def slot(self, name: str) -> Iterator[None]:
        """Hold one of `self.slots[name]` (default 1) cluster-wide slots, e.g. "generation": at most
        that many LLM generation runs (engine actor pools) at once, whatever the trial concurrency,
        so that concurrent pools cannot starve each other of CPUs."""
        count = max(1, self.slots.get(name, 1))
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            for i in range(count):
                held = contextlib.ExitStack()
                try:  # only taking the lock may mean "busy": the job's own TimeoutError must pass through
                    held.enter_context(self._lock(".slots", f"{name}-{i}", timeout_s=0.0))
                except TimeoutError:
                    continue
                with held:
                    yield
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {self.lock_timeout_s:.0f}s for a free {name!r} slot")
            time.sleep(0.5)

    @contextlib.contextmanager
    def _lock(self, stage: str, key: str, timeout_s: float | None = None) -> Iterator[None]:
        name = f"{stage}/{key}"
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        if self.remote and _ray_running():
            with ray_actor_lock(name, timeout_s=timeout_s, lease_s=self.lock_lease_s):
                yield
            return
        lock_dir = _ensure(self.local_root / stage / ".locks")
        with file_lock(lock_dir / f"{key}.lock", timeout_s=timeout_s):
            yield


def file_sizes(folder: Path) -> dict[str, int]:
    """Size of every file under `folder` but the manifest, by relative path (what a download is checked against)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def check_files(folder: Path, manifest: dict[str, Any], what: str) -> None:
    """Every file the manifest lists is in `folder` with its size (manifests written before the list
    existed have none: nothing to check)."""
    for rel, size in (manifest.get("files") or {}).items():
        path = folder / rel
        got = path.stat().st_size if path.is_file() else None
        if got != size:
            raise TkreError(f"{what}: file {rel} is {'missing' if got is None else f'{got} bytes'}, "
                            f"its manifest says {size} bytes")


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _rename_into_place(tmp: Path, target: Path) -> None:
    """Rename a finished temp dir onto `target`; an incomplete leftover at `target` is replaced."""
    if target.exists():
        if read_manifest(target) is not None:
            return  # someone else completed it first (possible without a shared lock): keep theirs
        shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _ray_running() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:  # pragma: no cover
        return False


# ------------------------------------------------------------------ storage checks
def check_storage_writable(storage: str, *, min_free_gb: float = 1.0) -> None:
    """Fail early, with a clear message, if `storage` cannot take writes (or a local disk is full)."""
    probe_name = f".tkre-write-probe-{uuid.uuid4().hex}"
    if is_remote(storage):
        try:
            fs, root = resolve_filesystem(storage)
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(f"{root.rstrip('/')}/{probe_name}") as f:
                f.write(b"ok")
            fs.delete_file(f"{root.rstrip('/')}/{probe_name}")
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"storage_path {storage!r} is not writable: {e}") from None
        return
    root = local_path(storage)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / probe_name
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"storage_path {storage!r} is not writable: {e.strerror or e}") from None
    free_gb = shutil.disk_usage(root).free / 1e9
    if free_gb < min_free_gb:
        raise ConfigError(f"storage_path {storage!r}: only {free_gb:.2f} GB free on its disk, "
                          f"need at least {min_free_gb:g} GB (set min_free_gb in the sweep to change)")

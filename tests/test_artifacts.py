"""Artifact store: keys, reuse, atomic completion, one computation under concurrency, pyarrow.fs URIs."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tkre.store.artifacts import ArtifactStore, artifact_key, check_storage_writable, file_lock
from tkre.errors import ConfigError


def test_key_depends_on_config_inputs_and_version():
    base = artifact_key("stage1", {"tau": 0.1, "lr": 1e-4}, {"edkg": "abc"})
    assert base == artifact_key("stage1", {"lr": 1e-4, "tau": 0.1}, {"edkg": "abc"})  # order-free
    assert base != artifact_key("stage1", {"tau": 0.2, "lr": 1e-4}, {"edkg": "abc"})
    assert base != artifact_key("stage1", {"tau": 0.1, "lr": 1e-4}, {"edkg": "abd"})
    assert base != artifact_key("stage2", {"tau": 0.1, "lr": 1e-4}, {"edkg": "abc"})
    assert base != artifact_key("stage1", {"tau": 0.1, "lr": 1e-4}, {"edkg": "abc"}, version="9.9")


def _writer(calls: list):
    def build(out: Path) -> dict:
        calls.append(1)
        (out / "data.txt").write_text("hello")
        (out / "sub").mkdir()
        (out / "sub" / "x.json").write_text("{}")
        return {"rows": 1}
    return build


def test_local_reuse_and_manifest(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    calls: list = []
    a = store.get_or_create("edkg", "k1", _writer(calls), config={"m": 1}, inputs={"split": "s"})
    assert not a.reused and calls == [1]
    assert (a.path / "data.txt").read_text() == "hello"
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert manifest["summary"] == {"rows": 1} and manifest["inputs"] == {"split": "s"}
    assert a.path == tmp_path / "store" / "artifacts" / "edkg" / "k1"
    b = store.get_or_create("edkg", "k1", _writer(calls))
    assert b.reused and calls == [1]
    assert [m["key"] for m in store.list("edkg")] == ["k1"]


def test_failed_build_leaves_nothing_and_incomplete_dir_is_rebuilt(tmp_path):
    store = ArtifactStore(str(tmp_path))

    def boom(out: Path):
        (out / "half.txt").write_text("x")
        raise RuntimeError("stage crashed")

    with pytest.raises(RuntimeError):
        store.get_or_create("scdg", "k", boom)
    assert not (tmp_path / "artifacts" / "scdg" / "k").exists()
    assert [p.name for p in (tmp_path / "artifacts" / "scdg").iterdir()] == [".locks"]
    # a directory without a manifest (e.g. copied by hand, killed upload) is not trusted
    (tmp_path / "artifacts" / "scdg" / "k").mkdir()
    calls: list = []
    a = store.get_or_create("scdg", "k", _writer(calls))
    assert not a.reused and calls == [1] and (a.path / "manifest.json").is_file()


def _race(root: str, log: str) -> None:
    store = ArtifactStore(root)

    def build(out: Path) -> dict:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        (out / "v").write_text(str(os.getpid()))
        return {}

    store.get_or_create("gen", "same", build)


def test_concurrent_processes_compute_once(tmp_path):
    log = tmp_path / "builds.log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "s"), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert len(log.read_text().split()) == 1


def test_lock_released_when_holder_killed(tmp_path):
    lock = tmp_path / "x.lock"
    ctx = mp.get_context("fork")

    def hold():
        with file_lock(lock, timeout_s=5):
            time.sleep(60)

    p = ctx.Process(target=hold)
    p.start()
    time.sleep(0.5)
    with pytest.raises(TimeoutError):
        with file_lock(lock, timeout_s=0.3):
            pass
    p.kill()
    p.join()
    with file_lock(lock, timeout_s=2):  # the kernel dropped the dead holder's lock
        pass


def test_file_uri_is_local(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")
    assert not store.remote
    a = store.get_or_create("split", "k", _writer([]))
    assert a.path == tmp_path / "artifacts" / "split" / "k"


def test_remote_code_path_with_pyarrow_filesystem(tmp_path, monkeypatch):
    """The upload/download path, against pyarrow's SubTreeFileSystem standing in for S3/GCS."""
    remote_root = tmp_path / "bucket"
    remote_root.mkdir()
    subtree = pafs.SubTreeFileSystem(str(remote_root), pafs.LocalFileSystem())
    monkeypatch.setattr("tkre.store.artifacts.resolve_filesystem", lambda uri: (subtree, "runs"))
    store = ArtifactStore("mock://bucket/runs", cache_dir=str(tmp_path / "cache1"))
    assert store.remote
    calls: list = []
    a = store.get_or_create("stage1", "k9", _writer(calls), config={"x": 1})
    assert not a.reused and a.uri == "mock://bucket/runs/artifacts/stage1/k9"
    uploaded = remote_root / "runs" / "artifacts" / "stage1" / "k9"
    assert (uploaded / "data.txt").read_text() == "hello" and (uploaded / "sub" / "x.json").is_file()
    assert json.loads((uploaded / "manifest.json").read_text())["config"] == {"x": 1}
    # a second machine (empty cache) downloads instead of recomputing
    other = ArtifactStore("mock://bucket/runs", cache_dir=str(tmp_path / "cache2"))
    b = other.get_or_create("stage1", "k9", _writer(calls))
    assert b.reused and calls == [1]
    assert (b.path / "sub" / "x.json").is_file() and b.path.is_relative_to(tmp_path / "cache2")
    assert [m["key"] for m in other.list()] == ["k9"]
    # an upload killed before its manifest is not visible
    (remote_root / "runs" / "artifacts" / "stage1" / "half").mkdir()
    assert other.find("stage1", "half") is None
    check_storage_writable("mock://bucket/runs")


def test_unwritable_storage_fails_early(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # unwritable even for root: a path under a regular file
    with pytest.raises(ConfigError, match="not writable"):
        check_storage_writable(str(blocker / "runs"))
    with pytest.raises(ConfigError, match="not a usable pyarrow.fs URI"):
        check_storage_writable("nosuchscheme://bucket/x")


def test_full_disk_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="GB free"):
        check_storage_writable(str(tmp_path), min_free_gb=1e9)
    check_storage_writable(str(tmp_path), min_free_gb=0.0)


def test_slots_bound_concurrency(tmp_path):
    store = ArtifactStore(str(tmp_path), slots={"generation": 2}, lock_timeout_s=5)
    with store.slot("generation"):
        with store.slot("generation"):
            third = ArtifactStore(str(tmp_path), slots={"generation": 2}, lock_timeout_s=0.6)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="slot"):
                with third.slot("generation"):
                    pass
            assert time.monotonic() - t0 >= 0.5
    with store.slot("generation"):  # freed again
        pass


def test_slot_lets_the_jobs_own_timeout_error_through(tmp_path):
    """A TimeoutError raised inside the slot is the job's error, not "slot busy" (issue 14, item 8)."""
    store = ArtifactStore(str(tmp_path), slots={"generation": 2}, lock_timeout_s=5)
    with pytest.raises(TimeoutError, match="the job's own time-out"):
        with store.slot("generation"):
            raise TimeoutError("the job's own time-out")
    with store.slot("generation"), store.slot("generation"):  # both slots were released
        pass


def test_ray_lock_lease_is_renewed_while_the_holder_lives_and_expires_when_it_is_killed(ray_local):
    """Remote-store locks: a short lease kept alive by a heartbeat, so a holder killed without its
    `finally` (force-cancelled task, lost node) frees the lock within about one lease (item 7)."""
    import ray

    from tkre.store.artifacts import ray_actor_lock

    name = f"test/lease-{time.time_ns()}"

    @ray.remote(num_cpus=0)
    class Holder:
        def hold(self, lock_name: str) -> bool:
            self.held = ray_actor_lock(lock_name, timeout_s=10, lease_s=1.0)
            self.held.__enter__()
            return True

    holder = Holder.remote()
    assert ray.get(holder.hold.remote(name))
    time.sleep(3.5)  # several leases: only the heartbeat keeps the lock
    with pytest.raises(TimeoutError):
        with ray_actor_lock(name, timeout_s=0.5, lease_s=1.0):
            pass
    ray.kill(holder)  # no `finally` runs, like ray.cancel(force=True)
    t0 = time.monotonic()
    with ray_actor_lock(name, timeout_s=20, lease_s=1.0):
        waited = time.monotonic() - t0
    assert waited < 5, waited


def test_build_clears_a_dead_builders_half_done_output(tmp_path):
    """A builder SIGKILLed mid-build leaves `.<key>.*.tmp`; the next builder (holding the key's lock) removes it."""
    leftover = tmp_path / "artifacts" / "stage1" / ".k1.dead.tmp"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "big.bin").write_bytes(b"x" * 100)
    other = tmp_path / "artifacts" / "stage1" / ".k2.alive.tmp"  # another key: not ours to touch
    other.mkdir()
    ArtifactStore(str(tmp_path)).get_or_create("stage1", "k1", _writer([]))
    assert not leftover.exists() and other.exists()

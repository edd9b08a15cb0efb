"""Hand-overs between stages on storage that nodes do not share (tkre.store.refs, ArtifactStore.ref):
a reference materialised on the node that uses it, downloaded once per node, checked against its
manifest; local storage hands over its own paths. S3 is moto's server on 127.0.0.1 (tests/s3_server.py);
"another node" is another home directory (its own cache), as a node with no shared disk has."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import S3Server  # noqa: E402

STORAGE = "s3://refs-bucket/store"


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        server.create_bucket("refs-bucket")
        old = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        yield server
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build(out: Path) -> dict:
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "weights.bin").write_bytes(b"w" * 5000)
    (out / "checkpoint" / "config.json").write_text("{}")
    return {"ok": True}


def _materialise_as_node(home: str, ref) -> str:
    os.environ["HOME"] = home
    from tkre.store.refs import materialise

    return materialise(ref)


def test_remote_artifact_handed_over_as_reference_downloaded_once_per_node(s3, tmp_path, monkeypatch):
    from tkre.store.artifacts import ArtifactStore, StoredDir

    monkeypatch.setenv("HOME", str(tmp_path / "head"))
    store = ArtifactStore(STORAGE)
    art = store.get_or_create("stage1", "k1", _build)
    assert art.manifest["files"] == {"checkpoint/config.json": 2, "checkpoint/weights.bin": 5000}
    ref = store.ref("stage1", "k1", "checkpoint")
    assert ref == StoredDir(STORAGE, "stage1", "k1", "checkpoint")
    assert str(ref) == f"{STORAGE}/artifacts/stage1/k1/checkpoint"  # what summaries record, not a head path

    # four workers of another node open it at once: one download, the others wait for it and reuse it
    node = str(tmp_path / "node2")
    gets_before = sum(1 for m, p in s3.requests if m == "GET" and p.endswith("/k1/checkpoint/weights.bin"))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        paths = pool.starmap(_materialise_as_node, [(node, ref)] * 4)
    gets = sum(1 for m, p in s3.requests if m == "GET" and p.endswith("/k1/checkpoint/weights.bin")) - gets_before
    assert set(paths) == {str(Path(node) / ".cache/tkre/store/artifacts" / Path(str(store.local_root)).name
                              / "stage1/k1/checkpoint")}
    assert gets == 1, f"{gets} downloads of the artifact's weights on one node"
    assert (Path(paths[0]) / "weights.bin").stat().st_size == 5000


def test_download_that_does_not_match_the_manifest_is_refused(s3, tmp_path, monkeypatch):
    from tkre.errors import TkreError
    from tkre.store.artifacts import ArtifactStore

    monkeypatch.setenv("HOME", str(tmp_path / "head"))
    store = ArtifactStore(STORAGE)
    store.get_or_create("stage2", "k2", _build)
    with store.fs.open_output_stream(f"{store.root}/stage2/k2/checkpoint/weights.bin") as f:
        f.write(b"short")  # the stored file is not what the manifest lists
    monkeypatch.setenv("HOME", str(tmp_path / "node2"))
    with pytest.raises(TkreError, match=r"stage2/k2.*checkpoint/weights.bin is 5 bytes, its manifest says 5000"):
        ArtifactStore(STORAGE).ref("stage2", "k2", "checkpoint").local()
    assert not list((tmp_path / "node2").rglob("weights.bin"))  # nothing half-checked left in the cache


def test_local_storage_hands_over_its_own_path(tmp_path):
    from tkre.store.artifacts import ArtifactStore
    from tkre.store.refs import materialise

    store = ArtifactStore(str(tmp_path / "store"))
    art = store.get_or_create("stage1", "k3", _build)
    ref = store.ref("stage1", "k3", "checkpoint")
    assert ref == str(art.path / "checkpoint") and materialise(ref) == ref  # no copy


def test_train_checkpoint_on_s3_materialised_once_and_checked_for_its_marker(s3, tmp_path, monkeypatch):
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from tkre.errors import TkreError
    from tkre.store.refs import CheckpointDir, materialise

    fs, root = pafs.FileSystem.from_uri("s3://refs-bucket/train/run/epoch_0000")
    for name, data in (("model/config.json", b"{}"), ("COMPLETE", b"{}")):
        with fs.open_output_stream(f"{root}/{name}") as f:
            f.write(data)
    monkeypatch.setenv("HOME", str(tmp_path / "node3"))
    ref = CheckpointDir(Checkpoint(root, filesystem=fs), "model", "COMPLETE")
    assert str(ref) == "s3://refs-bucket/train/run/epoch_0000/model"
    local = materialise(ref)
    assert local.startswith(str(tmp_path / "node3")) and os.path.isfile(os.path.join(local, "config.json"))
    assert materialise(ref) == local  # cached on this node
    fs.delete_file(f"{root}/COMPLETE")
    monkeypatch.setenv("HOME", str(tmp_path / "node4"))
    with pytest.raises(TkreError, match="incomplete"):
        materialise(ref)


def test_artifact_cached_here_but_gone_from_the_store_is_uploaded_again(s3, tmp_path, monkeypatch):
    """A node's cache is a copy of the store, not a second store: an artifact the store lost (a bucket
    emptied, a new bucket at the same URI) goes back to it when a lookup finds it only in the cache, so
    another node finds it there instead of computing it again."""
    from tkre.store.artifacts import ArtifactStore

    monkeypatch.setenv("HOME", str(tmp_path / "head"))
    store = ArtifactStore(STORAGE)
    built = store.get_or_create("stage1", "k3", _build)
    store.fs.delete_dir(f"{store.root}/stage1/k3")
    again = store.get_or_create("stage1", "k3", lambda out: pytest.fail("computed again"))
    assert again.reused and again.manifest == built.manifest
    monkeypatch.setenv("HOME", str(tmp_path / "node2"))
    other = ArtifactStore(STORAGE).find("stage1", "k3")
    assert other is not None and other.manifest == built.manifest
    assert (other.path / "checkpoint" / "weights.bin").stat().st_size == 5000

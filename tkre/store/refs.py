"""What stages hand each other on a cluster: references that the node using them materialises.

On a cluster without a shared file system a local path means nothing on another node: the folder the
pipeline task downloaded into its own node's cache is not on the node where a Ray Train worker or a
Ray Data actor runs. So a hand-over is one of

- a plain string: an HF model id, `embedded:minilm`, or a folder every node sees (local or NFS
  storage, where the artifact store hands over its own paths: no copy);
- `tkre.store.artifacts.StoredDir`: a folder inside a stored artifact (remote storage);
- `CheckpointDir`: a folder inside a Ray Train checkpoint (Ray's public `Checkpoint`: a path and its
  pyarrow file system), e.g. the best epoch of a run before its artifact is stored.

and whoever opens it calls `materialise(ref)` on its own node. Remote folders are downloaded into
that node's cache once, under a node-local file lock (`tkre.store.locks.file_lock`): the workers of a
node wait for the first one's download and reuse it; a download killed half-way leaves only a
temporary folder that the next one replaces. Artifacts are checked against their manifest's file
sizes; checkpoints against their completion marker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import pyarrow.fs as pafs

from tkre.errors import TkreError
from tkre.io import stable_hash
from tkre.store.locks import file_lock

#: Where Train checkpoints handed over from another node are cached, per node.
CHECKPOINT_CACHE = "~/.cache/tkre/checkpoints"
#: How long a process waits for another one's download of the same folder on its node.
DOWNLOAD_WAIT_S = 3600.0


@dataclass(frozen=True)
class CheckpointDir:
    """A folder (`sub`) inside a Ray Train checkpoint, complete when `marker` is in the checkpoint."""

    checkpoint: Any  # ray.train.Checkpoint (picklable: its path and its pyarrow file system)
    sub: str = ""
    marker: str | None = None

    def __str__(self) -> str:
        fs = self.checkpoint.filesystem
        scheme = "" if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}://"
        return f"{scheme}{self.checkpoint.path}" + (f"/{self.sub}" if self.sub else "")

    def local(self) -> str:
        """The folder on this node: the checkpoint itself on a local file system, else its copy in this
        node's cache (downloaded once per node)."""
        if isinstance(self.checkpoint.filesystem, pafs.LocalFileSystem):
            root = Path(self.checkpoint.path)
        else:
            cache = Path(os.path.expanduser(CHECKPOINT_CACHE))
            root = cache / stable_hash(str(CheckpointDir(self.checkpoint)), 16)
            (cache / ".locks").mkdir(parents=True, exist_ok=True)
            with file_lock(cache / ".locks" / f"{root.name}.lock", timeout_s=DOWNLOAD_WAIT_S):
                if not root.is_dir():
                    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".download", dir=cache))
                    try:
                        pafs.copy_files(self.checkpoint.path, str(tmp), source_filesystem=self.checkpoint.filesystem,
                                        destination_filesystem=pafs.LocalFileSystem())
                        os.replace(tmp, root)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
        if self.marker and not (root / self.marker).is_file():
            raise TkreError(f"checkpoint {self} is incomplete (no {self.marker} marker)")
        return str(root / self.sub) if self.sub else str(root)


class Materialisable(Protocol):
    """A reference to a folder that the node using it downloads (`StoredDir`, `CheckpointDir`)."""

    def local(self) -> str: ...


#: A hand-over: a name/path every node can use as it is, or a reference to materialise.
HandOver = Union[str, Materialisable]


def materialise(ref: HandOver) -> str:
    """The local folder (or unchanged name) a hand-over stands for, on the node that calls this."""
    if isinstance(ref, (str, os.PathLike)):
        return str(ref)
    return ref.local()

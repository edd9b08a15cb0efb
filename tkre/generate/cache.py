"""Generation cache: one small JSON file per generated row, written atomically, and per-run claims.

A row's key is a hash of (backend, model id + revision, prompt, sampling parameters, sample index,
and the decode-time JSON schema for constrained rows).
Layout: `<root>/<key[:2]>/<key>.json`. A file is written to a unique temporary name in the same
folder and renamed into place, so a reader sees a complete entry or none -- a run killed half-way
keeps every row it finished. An entry that cannot be read (a foreign or damaged file) is counted,
logged as a warning and regenerated.

Several runs (sweep trials, two shells) can share one cache. So that they do not each compute every
row, a run *claims* the rows it is about to generate: `<root>/.claims/<run id>.json` lists their keys
and stays `fcntl.flock`-ed while the run lives. Another run skips rows claimed by a live run and
waits for their entries; a claim whose owner died (SIGKILL, lost node) is unlocked by the kernel and
ignored. Claims are taken under a short cache-wide lock, so two runs starting together split the rows
instead of both taking all of them. Hand-written (about 60 lines) because the lock must die with its
process and work on NFS, which rules out lock servers and pid files; `fcntl.flock` gives both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from tkre.io import atomic_write_text, stable_hash

log = logging.getLogger(__name__)

DEFAULT_CACHE = "~/.cache/tkre/generation"
CLAIMS = ".claims"


def row_key(*, backend: str, model: str, revision: str, prompt: str, sampling: dict, sample_index: int,
            schema: str = "") -> str:
    """The cache key of one generated row; `schema` identifies the decode-time schema ("" = free text,
    which keeps the keys free-text rows always had)."""
    parts = {"backend": backend, "model": model, "revision": revision, "prompt": prompt,
             "sampling": sampling, "sample_index": sample_index}
    if schema:
        parts["schema"] = schema
    return stable_hash(parts, length=32)


class GenerationCache:
    """Key -> {"text", "tokens", ...}. Only successful generations are stored (errors are retried)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(os.path.expanduser(str(root or DEFAULT_CACHE)))
        self.root.mkdir(parents=True, exist_ok=True)
        self.corrupt = 0  # unreadable entries met by this object (each regenerated)
        self._claim_file: Path | None = None

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
            problem = None if isinstance(entry, dict) and isinstance(entry.get("text"), str) else "no text field"
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            entry, problem = None, f"{type(e).__name__}: {e}"
        if problem is None:
            return entry
        self.corrupt += 1
        log.warning("generation cache: corrupt entry %s (%s): regenerating it", path, problem)
        return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write_text(self.path(key), json.dumps({**entry, "key": key}, sort_keys=True))

    def keys(self) -> Iterator[str]:
        for p in self.root.glob("??/*.json"):
            yield p.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    # ------------------------------------------------------------------------------------ claims
    @contextlib.contextmanager
    def claim(self, keys: Iterable[str]) -> Iterator[set[str]]:
        """Claim `keys` for this run; yields those a live other run had claimed already (not ours to
        compute: wait for them with `claimed_by_others`). The claim ends with the block or the process."""
        claims = self.root / CLAIMS
        claims.mkdir(exist_ok=True)
        mine = claims / f"{uuid.uuid4().hex}.json"
        fd = None
        try:
            with _locked(claims / ".lock"):  # readers scan under the same lock: never see it half-made
                fd = os.open(mine, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)  # held while this run lives; the kernel drops it if it dies
                taken = self._live_claims(claims, skip=mine) & set(keys)
                os.write(fd, json.dumps(sorted(set(keys) - taken)).encode())
            self._claim_file = mine
            yield taken
        finally:
            self._claim_file = None
            mine.unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)

    def claimed_by_others(self) -> set[str]:
        """Keys claimed by live runs other than this object's current claim."""
        claims = self.root / CLAIMS
        if not claims.is_dir():
            return set()
        with _locked(claims / ".lock"):
            return self._live_claims(claims, skip=self._claim_file)

    @staticmethod
    def _live_claims(claims: Path, skip: Path | None) -> set[str]:
        live: set[str] = set()
        for path in claims.glob("*.json"):
            if path == skip:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # its run just ended
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # its run is alive
                    with open(path, encoding="utf-8") as f:
                        live.update(json.loads(f.read() or "[]"))
                    continue
                path.unlink(missing_ok=True)  # nobody holds it: its run died; the claim is void
            except (OSError, ValueError):
                continue
            finally:
                os.close(fd)
        return live


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

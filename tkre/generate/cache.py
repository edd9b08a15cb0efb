"""Generation cache: one small JSON file per generated row, written atomically.

A row's key is a hash of (backend, model id + revision, prompt, sampling parameters, sample index).
Layout: `<root>/<key[:2]>/<key>.json`. A file is written to a unique temporary name in the same
folder and renamed into place, so a reader sees a complete entry or none -- a run killed half-way
keeps every row it finished, and several processes (sweep trials) can share one cache without locks:
two writers of the same key write the same content and the last rename wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from tkre.io import atomic_write_text, stable_hash

DEFAULT_CACHE = "~/.cache/tkre/generation"


def row_key(*, backend: str, model: str, revision: str, prompt: str, sampling: dict, sample_index: int) -> str:
    """The cache key of one generated row."""
    return stable_hash({"backend": backend, "model": model, "revision": revision, "prompt": prompt,
                        "sampling": sampling, "sample_index": sample_index}, length=32)


class GenerationCache:
    """Key -> {"text", "tokens", ...}. Only successful generations are stored (errors are retried)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(os.path.expanduser(str(root or DEFAULT_CACHE)))
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self.path(key), encoding="utf-8") as f:
                entry = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("text"), str) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        atomic_write_text(self.path(key), json.dumps({**entry, "key": key}, sort_keys=True))

    def keys(self) -> Iterator[str]:
        for p in self.root.glob("??/*.json"):
            yield p.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

"""The one manifest schema: every stage output folder holds one `manifest.json` -- what the folder is
(stage, key, config, input keys, tkre version, seconds) and the stage's result under `summary`.
Written by the artifact store (`tkre.store.artifacts`) and by the per-stage commands (`tkre generate ...`);
never by the stages themselves, which return their summary.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from tkre import __version__
from tkre.io import atomic_write_json

MANIFEST = "manifest.json"


def make_manifest(stage: str, summary: dict[str, Any], *, key: str | None = None, config: Any = None,
                  inputs: dict[str, str] | None = None, seconds: float | None = None) -> dict[str, Any]:
    """The one manifest schema: what a stage's output folder is, and the stage's result (`summary`)."""
    return {"stage": stage, "key": key, "config": config, "inputs": inputs or {}, "tkre_version": __version__,
            "seconds": None if seconds is None else round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "summary": summary}


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    atomic_write_json(path, manifest)
    return path


def write_stage_manifest(out_dir: str | Path, stage: str, run: Callable[[], dict[str, Any]], config: Any = None
                         ) -> dict[str, Any]:
    """A stage run outside the store (`tkre generate ...`): its summary written as OUT/manifest.json in
    the one schema -- also when it failed with a GenerationError carrying its counts."""
    from tkre.errors import GenerationError

    try:
        summary = run()
    except GenerationError as e:
        if e.summary is not None:
            write_manifest(out_dir, make_manifest(stage, e.summary, config=config))
        raise
    write_manifest(out_dir, make_manifest(stage, summary, config=config))
    return summary


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # treated as incomplete: recomputed under the lock

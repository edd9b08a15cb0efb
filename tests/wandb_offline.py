"""Read what W&B wrote for an offline run (`<dir>/wandb/offline-run-*/run-<id>.wandb`), for tests.

wandb 0.31 ships no Python reader of its transaction log (the Go core writes it; `wandb sync` uploads
it), and an offline run writes no config.yaml / wandb-summary.json. The file is a LevelDB-style log
(32 KiB blocks; records of crc32 + 2-byte length + type: full, first, middle, last) after a 7-byte
header (":W&B", magic 0xBEE1, version 0), each record a `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every Record of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:7] == HEADER, f"{path}: not a W&B transaction log (header {data[:7]!r})"
    out, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # preallocated zeros at the end
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def read_run(run_dir: str | Path) -> dict:
    """One offline run: its run record (job_type, tags, group, config), history rows, summary, exit."""
    [path] = Path(run_dir).glob("*.wandb")
    run, history, summary, exited, tags, artifacts = None, [], {}, False, None, []
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            tags = list(r.run.tags)
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "artifact":
            artifacts.append(r.artifact.name)
        elif kind == "exit":
            exited = True
    assert run is not None, f"{path}: no run record"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    return {"id": run.run_id, "job_type": run.job_type, "group": run.run_group, "tags": tags, "config": config,
            "history": history, "summary": summary, "exited": exited, "artifacts": artifacts,
            "files": Path(run_dir) / "files"}

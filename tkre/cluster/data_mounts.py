"""Is every dataset folder a sweep reads present on the nodes of a cluster file?

The licensed datasets (TACRED and its family) are not shipped: a sweep names a folder such as
`/data/tacred`, and on a cluster that folder must exist on every node where a trial's pipeline task
may load it. `ray up` puts files on a node in two ways, and `tkre cluster check --sweep` accepts
either: a `file_mounts` target (copied from the machine running `ray up`, on every node), or a setup
command that copies into the folder (e.g. `aws s3 sync s3://bucket/tacred /data/tacred`, or
pyarrow's `copy_files` from the storage bucket). Reading the commands is a heuristic: a command
counts when it names a copy verb (cp, sync, rsync, rclone, copy_files, ...) and its LAST local path is
the folder or one above it (the destination; a `mkdir -p /data` alone provides nothing). Without this
check the first trial on TACRED fails on the cluster, after the nodes have started, with "does not
exist" -- the preflight check on the driver sees only the head's files.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Iterable

#: a command segment that copies something somewhere
_COPY_VERB = re.compile(r"\b(cp|sync|rsync|rclone|copy|copy_files|copy_file|download_dir|scp)\b")
#: the words of a command (quotes, brackets, commas, `=` separate them)
_WORD = re.compile(r"[^\s'\",;()\[\]=]+")
#: `$HOME` spelled for a shell; `~` is what file_mounts and sweep files use
_HOME = re.compile(r"^(\$HOME|\$\{HOME\})(?=/|$)")


def _normal(path: str) -> str:
    """One spelling per folder: `$HOME/x/` and `~/x` are both `~/x`."""
    return posixpath.normpath(_HOME.sub("~", path.strip()))


def _local(word: str) -> bool:
    return word.startswith(("/", "~", "$HOME", "${HOME}"))


def copy_destinations(commands: Iterable[str]) -> list[str]:
    """The folders that setup commands copy into: per command segment (split at `&&`, `||`, `;`, `|`,
    newlines) with a copy verb, its last local path."""
    out = []
    for command in commands:
        for segment in re.split(r"&&|\|\||;|\||\n", str(command)):
            if _COPY_VERB.search(segment):
                local = [w for w in _WORD.findall(segment) if _local(w)]
                if local:
                    out.append(_normal(local[-1]))
    return out


def _covers(folder: str, path: str) -> bool:
    return folder != "/" and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def provided_folders(prepared: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """node type -> [(folder, how)] the cluster file puts on nodes of that type: its file_mounts
    targets (every node) and the destinations of the setup commands that type runs (the head: the
    merged head_setup_commands; a worker type: its own worker_setup_commands, which replace the
    global ones in `ray up`, else the merged worker_setup_commands). `prepared`: the cluster file as
    `validate_cluster_config` returns it."""
    mounts = [(_normal(target), "file_mounts") for target in (prepared.get("file_mounts") or {})]
    head = prepared.get("head_node_type")
    out = {}
    for name, spec in (prepared.get("available_node_types") or {}).items():
        if name == head:
            commands = prepared.get("head_setup_commands") or []
        else:
            commands = spec.get("worker_setup_commands", prepared.get("worker_setup_commands") or [])
        out[name] = mounts + [(d, "setup command") for d in copy_destinations(commands)]
    return out


def trial_node_types(prepared: dict[str, Any], trial_resources: dict[str, float]) -> list[str]:
    """The node types a trial's pipeline task (which loads the dataset) may run on: all of them,
    unless the sweep's `resources.trial_resources` names a custom resource only some types have."""
    types = prepared.get("available_node_types") or {}
    custom = {k for k in trial_resources if k not in ("CPU", "GPU", "memory")}
    return [n for n, t in types.items() if custom <= set(t.get("resources") or {})]


def missing_dataset_folders(prepared: dict[str, Any], trials: Iterable[tuple[str, Any]], *,
                            trial_resources: dict[str, float], sweep_file: str,
                            cluster_file: str) -> list[str]:
    """One message per dataset folder (`data.path`, `data.patch_path`) that some trial reads and the
    cluster file puts on not every node type that may run the trial; `trials`: (name, ExperimentConfig)
    in plan order. URIs are skipped (nothing to put on a node)."""
    provided = provided_folders(prepared)
    needing = trial_node_types(prepared, trial_resources)
    users: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name, cfg in trials:
        for field in ("path", "patch_path"):
            value = getattr(cfg.data, field)
            if value and "://" not in value:
                users.setdefault((f"data.{field}", value), []).append((name, cfg.data.dataset))
    messages = []
    for (field, value), who in users.items():
        path = _normal(value)
        lacking = [n for n in needing if not any(_covers(folder, path) for folder, _ in provided[n])]
        if not lacking:
            continue
        first, dataset = who[0]
        others = f"; {len(who) - 1} more trial(s) read it" if len(who) > 1 else ""
        messages.append(
            f"{sweep_file}: trial {first} reads {field} {value!r} (dataset {dataset}{others}), but {cluster_file} "
            f"neither mounts it (file_mounts) nor copies it in a setup command on node type(s) {', '.join(lacking)}: "
            f"add a file_mounts entry {{{value!r}: <your local copy>}} or a setup command that copies it there, "
            f"e.g. `aws s3 sync s3://YOUR-BUCKET/{posixpath.basename(path)} {value}`")
    return messages

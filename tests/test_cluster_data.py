"""`tkre cluster check --sweep`: every dataset folder a sweep reads (data.path, data.patch_path) must be
put on the nodes by the cluster file -- a file_mounts target, or a setup command that copies into it --
else the check names the sweep file, the trial, the field and the path (tkre/cluster/data_mounts.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tkre.cluster.cluster_yaml import load_cluster_yaml
from tkre.cluster.data_mounts import copy_destinations
from tkre.errors import ConfigError
from tkre.sweep.plan import check_cluster_file

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _cluster(tmp_path: Path, *, setup: list[str], mounts: dict | None = None, name: str = "cluster.yaml",
             worker_setup: list[str] | None = None) -> str:
    """A copy of the shipped cluster file with its own setup commands and file_mounts."""
    raw = copy.deepcopy(load_cluster_yaml(CLUSTER_YAML))
    raw["setup_commands"] = setup
    raw["file_mounts"] = {"~/tkre": ".", **(mounts or {})}
    if worker_setup is not None:
        raw["available_node_types"]["gpu_1x_a10g"]["worker_setup_commands"] = worker_setup
    return _write(tmp_path / name, raw)


def _tacred_sweep(tmp_path: Path) -> str:
    return _write(tmp_path / "tacred_sweep.yaml", {
        "name": "tacred_sweep",
        "base": {"finetune": {"resources": {"num_workers": 1, "use_gpu": True}}},
        "grid": {"data": [{"dataset": "semeval"}, {"dataset": "tacred", "path": "/data/tacred"},
                          {"dataset": "retacred", "path": "/data/tacred", "patch_path": "/data/retacred"}],
                 "data.seed": [1, 2]},
        "resources": {"max_concurrent_trials": 2}})


def test_a_sweep_reading_a_folder_the_cluster_never_provides_is_an_error_naming_it(tmp_path):
    sweep = _tacred_sweep(tmp_path)
    bare = _cluster(tmp_path, setup=["pip install -e $HOME/tkre", "sudo mkdir -p /data"])
    with pytest.raises(ConfigError) as e:
        check_cluster_file(bare, sweep)
    message = str(e.value)
    assert f"{sweep}: trial grid/002 reads data.path '/data/tacred' (dataset tacred; 3 more trial(s)" in message
    assert "data.patch_path '/data/retacred' (dataset retacred" in message
    assert f"but {bare} neither mounts it (file_mounts) nor copies it in a setup command" in message
    assert "node type(s) head, gpu_8x_a100, gpu_8x_h100, gpu_1x_a10g" in message


def test_a_file_mount_or_a_copying_setup_command_provides_the_folder(tmp_path):
    sweep = _tacred_sweep(tmp_path)
    mounted = _cluster(tmp_path, setup=[], mounts={"/data/tacred": "/tmp", "/data/retacred/": "/tmp"},
                       name="mounted.yaml")
    assert check_cluster_file(mounted, sweep)["sweep"]["dataset_folders"] == ["/data/retacred", "/data/tacred"]
    synced = _cluster(tmp_path, setup=["aws s3 sync s3://my-bucket/data /data"], name="synced.yaml")
    assert check_cluster_file(synced, sweep)["sweep"]["name"] == "tacred_sweep"
    # the shipped cluster file copies the bucket's data/ folder to /data: paper_table2 passes
    summary = check_cluster_file(str(CLUSTER_YAML), "paper_table2")
    assert "/data/tacred" in summary["sweep"]["dataset_folders"]


def test_only_the_node_types_without_the_folder_are_named(tmp_path):
    sweep = _tacred_sweep(tmp_path)
    # a worker type's own worker_setup_commands replace the global setup commands in `ray up`
    partial = _cluster(tmp_path, setup=["gsutil -m rsync -r gs://b/data /data"], worker_setup=["echo hi"])
    with pytest.raises(ConfigError, match=r"on node type\(s\) gpu_1x_a10g: add a file_mounts entry"):
        check_cluster_file(partial, sweep)


def test_copy_destinations_read_the_last_local_path_of_a_copying_command():
    assert copy_destinations(["aws s3 sync s3://b/tacred /data/tacred"]) == ["/data/tacred"]
    assert copy_destinations(['if [ -n "$X" ]; then sudo mkdir -p /data && python -c '
                              '"import os, pyarrow.fs as f; f.copy_files(os.environ[\'X\'], \'/data\')"; fi']) == ["/data"]
    assert copy_destinations(["cp -r /mnt/src $HOME/data/"]) == ["~/data"]
    assert copy_destinations(["mkdir -p /data/tacred", "pip install -e ~/tkre"]) == []

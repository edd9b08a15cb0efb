"""HF_TOKEN from the driver's shell reaches Ray workers on OTHER nodes of a cluster (whose processes do
not inherit the driver's environment) through tkre's worker setup hook, and appears in no file Ray
writes (runtime envs are logged in logs/runtime_env_agent.log; the hook's closure is not).

A two-node cluster (ray.cluster_utils.Cluster) started in a subprocess -- this file run as a script --
WITHOUT HF_TOKEN in its environment; the driver then sets it and joins through `tkre.cluster.runtime.init_ray`,
like `tkre sweep --address auto` on a head node whose shell exported it (~30-60 s on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOKEN = "hf_" + "tkreTestTokenNotARealOne1234567"  # key-shaped, as a real token is


def _main(out: Path) -> None:
    import ray
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    from tkre.cluster.runtime import init_ray

    # keep this cluster private to this process (see tests/test_cluster_multinode.py)
    ray._private.utils.write_ray_address = lambda *a, **k: None
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"gpu_node": 1})
    report: dict = {}
    try:
        os.environ["HF_TOKEN"] = TOKEN  # the driver's shell, not the nodes'
        init_ray(cluster.address)
        cluster.wait_for_nodes()

        @ray.remote(num_cpus=1, resources={"gpu_node": 0.5})
        def token_on_the_other_node() -> str | None:
            return os.environ.get("HF_TOKEN")

        @ray.remote(num_cpus=0, resources={"gpu_node": 0.5})
        class Engine:
            def token(self) -> str | None:
                return os.environ.get("HF_TOKEN")

        report["task"] = ray.get(token_on_the_other_node.remote(), timeout=300) == TOKEN
        report["actor"] = ray.get(Engine.remote().token.remote(), timeout=300) == TOKEN
        report["session_dirs"] = sorted({n.get_session_dir_path() for n in cluster.list_all_nodes()})
    finally:
        ray.shutdown()
        cluster.shutdown()
    files = [p for d in report["session_dirs"] for p in Path(d).rglob("*") if p.is_file()]
    report["files_checked"] = len(files)
    report["files_with_token"] = [str(p) for p in files if TOKEN.encode() in p.read_bytes()]
    out.write_text(json.dumps(report))


def test_hf_token_reaches_workers_on_other_nodes_and_no_file(tmp_path):
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert TOKEN not in run.stdout + run.stderr  # nor on the console
    report = json.loads(out.read_text())
    assert report["task"] and report["actor"], report
    assert report["files_checked"] > 0 and report["files_with_token"] == [], report


if __name__ == "__main__":
    _main(Path(sys.argv[1]))

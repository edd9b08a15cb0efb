"""`tkre cluster check`: a `ray up` cluster file checked offline, and whether a sweep's trials fit it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tkre.cli.options import console

cluster_app = typer.Typer(help="Ray cluster files (`ray up cluster.yaml`).", no_args_is_help=True)


@cluster_app.command("check")
def cluster_check(cluster_file: Path = typer.Argument(Path("cluster.yaml"), help="the `ray up` cluster file"),
                  sweep: Optional[str] = typer.Option(None, "--sweep", help="also check this sweep's trials fit")) -> None:
    """Validate a cluster file against Ray's autoscaler schema (offline, no cloud credentials) and,
    with --sweep, check that one trial of that sweep can ever be placed on its node types and that the
    dataset folders it reads (data.path, data.patch_path) are mounted or copied onto the nodes."""
    from tkre.sweep.plan import check_cluster_file

    summary = check_cluster_file(str(cluster_file), sweep)
    console.print(f"ok: {cluster_file} ({summary['provider']}): {summary['node_types']}")
    console.print(f"  storage (TKRE_STORAGE_PATH): {summary['storage'] or 'not set: sweeps use their files storage_path'}")
    if "sweep" in summary:
        s = summary["sweep"]
        asks = "; ".join(f"{r['stage']} {r['count']} x {json.dumps(r['bundle'])}" for r in s["requests"])
        console.print(f"ok: sweep {s['name']} fits ({s['trials_per_grid']} grid point(s), up to "
                      f"{s['concurrent_trials']} at once; per trial: {asks})")
        if s["dataset_folders"]:
            console.print(f"ok: dataset folders on every node that runs trials: {', '.join(s['dataset_folders'])}")

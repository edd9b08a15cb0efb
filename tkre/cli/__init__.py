"""The `tkre` command line: tkre/cli/app/app.py builds it from one module per command group."""

from tkre.cli.app import app, run_app

__all__ = ["app", "run_app"]

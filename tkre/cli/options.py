"""What several commands share: their consoles, the data options (with `DataConfig`'s defaults and
descriptions, declared once there) and the `--set` help.

Typer reads an option's default from the function signature, so each option is an object built here
and used as the default of every command that takes it.
"""

from __future__ import annotations

import typer
from rich.console import Console

from tkre.config import DataConfig

console = Console()
err_console = Console(stderr=True)

_DATA = DataConfig.model_fields


def _data_option(field: str, flag: str, help: str | None = None):
    return typer.Option(_DATA[field].default, flag, help=help or _DATA[field].description)


DATASET_HELP = _DATA["dataset"].description
PATH_HELP = _DATA["path"].description
PATCH_HELP = _DATA["patch_path"].description
SET_HELP = "dotted config override KEY=VALUE (repeatable; applied after the other options), e.g. --set lr=1e-4"

DATASET = _data_option("dataset", "--dataset")
PATH = _data_option("path", "--path")
PATCH = _data_option("patch_path", "--patch")
K = _data_option("k", "--k")
SEED = _data_option("seed", "--seed")
PROTOCOL = _data_option("protocol", "--protocol")

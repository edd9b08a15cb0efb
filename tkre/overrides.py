"""One way to change a config: dotted `key=value` overrides applied to a config dict, then validated.

    apply_overrides({"data": {"k": 8}}, {"pretrain.scl.tau": 0.05})        # -> ExperimentConfig
    load_with_overrides("exp.yaml", FinetuneConfig, section="finetune", overrides={"epochs": 3})

Sweep points and variants, CLI flags (`--epochs 3` is `epochs=3`, `--set finetune.lr=1e-4`) and YAML
merges all go through `set_path` and are validated once at the end, so every mistake is the same
`ConfigError` naming the source, the line when a file gave the value, and the dotted field. A path
that names no field is refused before anything is set (`unknown field 'sed' in data`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tkre.config import ExperimentConfig, field_model, read_yaml, unknown_key_hint, validation_error_message
from tkre.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def check_path(path: str, model: type[BaseModel] = ExperimentConfig) -> str | None:
    """None if `path` (e.g. `pretrain.scl.tau`) names a field of `model`; else what is wrong."""
    parts, root = path.split("."), model
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            where = ".".join(parts[:i]) or "the config"
            return f"unknown field {part!r} in {where}{unknown_key_hint(root, tuple(parts[:i + 1]), dotted=True)}"
        sub = field_model(model.model_fields[part].annotation)
        if i < len(parts) - 1:
            if sub is None:
                return f"{'.'.join(parts[:i + 1])} is a value, not a section"
            model = sub
    return None


def set_path(data: dict, path: str, value: Any) -> None:
    """Set a dotted path; a mapping value is merged into an existing section (grid `data: [{...}]`)."""
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    old = node.get(parts[-1])
    if isinstance(value, dict) and isinstance(old, dict):
        merged = copy.deepcopy(old)
        for k, v in value.items():
            set_path(merged, k, v)
        node[parts[-1]] = merged
    else:
        node[parts[-1]] = copy.deepcopy(value)


def parse_assignments(items: list[str] | None, source: str = "--set") -> dict[str, Any]:
    """`["finetune.lr=1e-4", "stages.edkg=false"]` -> dotted overrides (values read as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {item!r}: expected dotted.key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} {item!r}: value is not YAML: {e}") from None
    return out


def apply_overrides(data: dict, overrides: dict[str, Any], model: type[M] = ExperimentConfig, *,
                    source: str = "<overrides>", lines: dict[tuple, int] | None = None,
                    prefix: tuple = ()) -> M:
    """`data` (a `model` dict) with dotted-path overrides, validated. Errors name `source`, the line
    of the value when `lines` (a read_yaml key map, relative to `prefix`) has it, and the field."""
    data = copy.deepcopy(data)
    for path, value in overrides.items():
        problem = check_path(path, model)
        if problem:
            raise ConfigError(f"{source}: {path}: {problem}")
        set_path(data, path, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_error_message(e, source, lines, prefix, model)) from None


def section_of(data: Any, model: type[BaseModel], section: str | None) -> tuple[Any, tuple]:
    """The part of a YAML document that holds `model`: its `section` when the document is an experiment
    file (it has that key, or another experiment section), else the whole document. The one place that
    guesses "which section is this YAML?"."""
    if section is not None and isinstance(data, dict):
        other_sections = set(ExperimentConfig.model_fields) - set(model.model_fields)
        if section in data or other_sections & set(data):
            return data.get(section) or {}, (section,)
    return data, ()


def load_with_overrides(path: str | Path | None, model: type[M], *, section: str | None = None,
                        overrides: dict[str, Any] | None = None) -> M:
    """`model` from an optional YAML file (the file is the model itself, or an experiment file whose
    `section` holds it), with dotted overrides (None values skipped: options not given) on top."""
    data: Any = {}
    lines: dict[tuple, int] = {}
    prefix: tuple = ()
    if path is not None:
        raw, lines = read_yaml(path)
        data, prefix = section_of(raw, model, section)
        if not isinstance(data, dict):
            where = f" under {section!r}" if prefix else ""
            raise ConfigError(f"{path}: expected a mapping{where}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    source = str(path) if path is not None else "<options>"
    if path is not None:  # a file's own mistakes name its lines, before any option is applied
        apply_overrides(data, {}, model, source=source, lines=lines, prefix=prefix)
    return apply_overrides(data, given, model, source=source if not given else f"{source} + options")

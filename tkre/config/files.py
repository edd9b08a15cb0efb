"""Reading configuration files: YAML with line numbers, and pydantic errors as `file:line: field: message`.

Kept apart from tkre/config/__init__.py (the models themselves) so that module stays a readable list of settings;
`from tkre.config import load_config, read_yaml, ...` keeps working (re-exported there).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tkre.errors import ConfigError, decode_utf8


M = TypeVar("M", bound=BaseModel)


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            lines.update(_key_lines(item, prefix + (i,)))
    return lines


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; return (data, key-path -> line). Syntax errors become ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = decode_utf8(path.read_bytes(), str(path), config=True)
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return (data if data is not None else {}), (_key_lines(node) if node is not None else {})


def field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly, or as the element of an Optional/list/dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = field_model(arg)
        if found is not None:
            return found
    return None


def unknown_key_hint(model: type[BaseModel] | None, loc: tuple, *, dotted: bool = False) -> str:
    """For an unknown key at `loc` of `model`: `; did you mean ...?` with a close spelling among the
    keys allowed there, or the sub-section that has the key; else ` (known: ...)`. `dotted` names a
    suggestion by its whole path from `model` (for `--set a.b.c`), else from where the key stands."""
    for part in loc[:-1]:
        if model is None:
            return ""
        f = model.model_fields.get(part) if isinstance(part, str) else None
        if f is not None:
            model = field_model(f.annotation)
        # else: a dict key or list index inside a field whose element model `model` already is
    if model is None:
        return ""
    key, known = str(loc[-1]), list(model.model_fields)
    at = [str(p) for p in loc[:-1]] if dotted else []
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {'.'.join([*at, close[0]])}?"
    moved = [name for name, f in model.model_fields.items()
             if (sub := field_model(f.annotation)) is not None and key in sub.model_fields]
    if moved:
        return f"; did you mean {', '.join('.'.join([*at, m, key]) for m in moved)}?"
    return f" (known: {', '.join(known)})"


def validation_error_message(err: ValidationError, source: str, lines: dict[tuple, int] | None = None,
                             prefix: tuple = (), model: type[BaseModel] | None = None) -> str:
    """One line per problem: `file:line: field.path: message` (an unknown key of `model` gets a hint)."""
    out = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        line = None
        for n in range(len(loc), 0, -1):  # nearest enclosing key that has a line
            if lines and loc[:n] in lines:
                line = lines[loc[:n]]
                break
        field = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + unknown_key_hint(model, tuple(e["loc"]))
        out.append(f"{source}{f':{line}' if line else ''}: {field}: {msg}")
    return "\n".join(out)


def load_config(path: str | Path, model: type[M], *, section: str | None = None) -> M:
    """Load `model` from a YAML file (optionally from one top-level `section` of it)."""
    data, lines = read_yaml(path)
    prefix: tuple = ()
    if section is not None:
        data = (data or {}).get(section, {})
        prefix = (section,)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping{f' under {section!r}' if section else ''}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_error_message(e, str(path), lines, prefix, model)) from None


def validate_config(data: dict, model: type[M], source: str = "<config>") -> M:
    """Validate a plain dict (CLI overrides, sweep trials) with the same one-line errors."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_error_message(e, source, model=model)) from None

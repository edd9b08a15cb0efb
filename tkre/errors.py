"""One exception type per kind of user mistake. The CLI prints them in one line."""

from __future__ import annotations

import re


class TkreError(Exception):
    """Base class: an error caused by input the user can fix (not a bug in tkre)."""


class DataError(TkreError):
    """Bad dataset input. Names the file, the record (line number or id) and the field."""

    def __init__(self, message: str, *, file: str | None = None, record: str | int | None = None,
                 field: str | None = None):
        self.file, self.record, self.field, self.reason = file, record, field, message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(TkreError):
    """Bad configuration (YAML or CLI options). Names the file, line and field where known."""


class MissingDependencyError(TkreError):
    """An optional package is needed; the message names what to install."""


class RayStartError(TkreError):
    """Ray could not start or be joined; the message carries the reason and a hint."""


class GenerationError(TkreError):
    """A generation stage whose failed rows exceed the tolerated share (`max_error_fraction`).
    `summary` is the stage's result (counts, reasons) for whoever writes its manifest."""

    def __init__(self, message: str, *, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: object) -> str:
    """`text` without ANSI colour/cursor codes (Ray colours its task tracebacks)."""
    return _ANSI.sub("", str(text))


def one_line(text: object, limit: int = 300) -> str:
    """A message as one clean line: ANSI colour codes removed, the first non-empty line, truncated."""
    lines = [ln.strip() for ln in strip_ansi(text).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


def decode_utf8(data: bytes, file: str, *, config: bool = False) -> str:
    """Decode a user file's bytes as UTF-8 (a leading byte-order mark is dropped). A non-UTF-8 byte
    raises DataError (or ConfigError with `config=True`) naming the file, line and column, instead of
    a bare UnicodeDecodeError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        what = f"byte 0x{data[e.start]:02x} at column {column} is not UTF-8 (save the file as UTF-8)"
        if config:
            raise ConfigError(f"{file}:{line}: {what}") from None
        raise DataError(what, file=file, record=f"line {line}") from None


def error_reason(error: BaseException) -> str:
    """An exception as one clean line, `Type: message`: the error the user's code raised, unwrapped
    from Ray's task errors (whose text is a traceback with ANSI colour codes)."""
    try:
        from ray.exceptions import RayTaskError
    except ImportError:  # pragma: no cover
        return one_line(f"{type(error).__name__}: {error}", 500)
    seen: set[int] = set()
    while isinstance(error, RayTaskError) and getattr(error, "cause", None) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.cause
    if isinstance(error, RayTaskError):  # cause not deserialisable: the last "Type: message" line of its text
        lines = [ln for ln in strip_ansi(error).splitlines() if ln.strip() and not ln[0].isspace()]
        return one_line(lines[-1] if lines else type(error).__name__, 500)
    return one_line(f"{type(error).__name__}: {error}", 500)

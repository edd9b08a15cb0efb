"""One exception type per kind of user mistake. The CLI prints them in one line."""

from __future__ import annotations


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

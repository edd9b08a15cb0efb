"""A quiet console for long Ray commands: Ray's, Tune's and other libraries' own output goes to a log
file, and the terminal shows tkre's lines only (trial lines, counts, tables, tkre's log records).

Why the driver's file descriptors, not a Ray or Tune setting: the noise comes by several roads, and no
public option closes them all.
- Ray's driver prints what the cluster pushes to it (raylet warnings such as "N PYTHON worker processes
  have been started", errors of actors and tasks) from a background thread to `sys.stdout` /
  `sys.stderr`, looked up at each write; the warning's threshold is an internal system config.
- Ray's C++ core worker in the driver writes its own lines (`core_worker.cc ...`) to descriptor 2;
  Python-level redirection (`contextlib.redirect_stdout`) never sees them.
- Tune prints its experiment box ("Configuration for experiment", "View detailed results here") with
  `print`, even at `verbose=0`; its warnings ("process_trial_result took ... may be a performance
  bottleneck") and Ray's (token authentication, ...) go through loggers holding `sys.stderr`.
So `quiet_console(log_path)` points descriptors 1 and 2 of this process, and `sys.stdout`/`sys.stderr`,
at the log file (opened for appending: the Ray processes started meanwhile inherit it), and keeps a
duplicate of the terminal taken just before for tkre: `terminal_file()` for rich consoles (`TrialLines`
and the CLI's consoles, re-pointed here), and a handler on the `tkre` logger (whose records also reach
the log through the root logger). A Ray started inside the block is shut down inside it, so its last
words land in the file too. `log_path=None` (`--verbose`) changes nothing: everything stays on the
terminal as before. Worker output (`TKRE_LOG_TO_DRIVER=1`) is printed by the same driver thread, so it
goes to the log file as well unless `--verbose`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import IO, Iterator, Sequence

_terminal: dict[str, IO[str] | None] = {"out": None, "err": None}


def terminal_file(stderr: bool = False) -> IO[str] | None:
    """The terminal inside `quiet_console` (a duplicate of its stdout/stderr), else None: rich's default,
    `sys.stdout`/`sys.stderr` at each write. Pass it as a rich Console's `file`."""
    return _terminal["err" if stderr else "out"]


def is_quiet() -> bool:
    """True inside `quiet_console` with a log file: nothing but tkre's own output may use the terminal (a
    rich Live must not take over `sys.stdout`, or Ray's prints would reach the terminal through it)."""
    return _terminal["out"] is not None


def _terminal_copy(stream: IO[str], fd: int) -> IO[str]:
    """A line-buffered text stream on a duplicate of `fd` when `stream` writes to that descriptor (a real
    process stream), else `stream` itself (a stream captured in Python, e.g. click's CliRunner)."""
    try:
        own = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        own = False
    if not own:
        return stream
    stream.flush()
    return open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="replace")


@contextlib.contextmanager
def quiet_console(log_path: str | Path | None, consoles: Sequence = ()) -> Iterator[Path | None]:
    """Send everything but tkre's own output to `log_path` for the block (see the module docstring);
    `consoles`: rich Consoles made with the default file (sys.stdout/sys.stderr), pointed at the terminal
    for the block and back at the default after. `None`: no change (verbose). Yields the log's path."""
    if log_path is None or is_quiet():
        yield Path(log_path) if log_path else None
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ray_before = _ray_initialized()
    out, err = _terminal_copy(sys.stdout, 1), _terminal_copy(sys.stderr, 2)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    logfile = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(logfile.fileno(), 1)
    os.dup2(logfile.fileno(), 2)
    sys.stdout = sys.stderr = logfile
    _terminal.update(out=out, err=err)
    handler = logging.StreamHandler(err)
    root = logging.getLogger().handlers
    handler.setFormatter(root[0].formatter if root else logging.Formatter("%(message)s"))
    tkre_log = logging.getLogger("tkre")
    tkre_log.addHandler(handler)
    for c in consoles:
        c.file = err if c.stderr else out
    try:
        note = f"Ray's and Tune's own output (warnings, Tune's boxes): {log_path} (--verbose shows it here)"
        print(note, file=err, flush=True)  # named once, whatever the logging level
        print(note, file=logfile)
        yield log_path
    finally:
        try:
            if not ray_before and _ray_initialized():
                import ray

                ray.shutdown()
        finally:
            tkre_log.removeHandler(handler)
            for c in consoles:
                c.file = None  # rich's default again: sys.stdout/sys.stderr at each write
            _terminal.update(out=None, err=None)
            logfile.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            logfile.close()
            for stream, original in ((out, saved_streams[0]), (err, saved_streams[1])):
                if stream is not original:
                    stream.close()
            if log_path.is_file() and log_path.stat().st_size == 0:
                log_path.unlink()  # nothing was said: no empty file left behind


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())

"""What a sweep leaves on the console and on disk.

- A quiet console (tkre.cluster.quiet): during `tkre sweep` the terminal shows tkre's lines only, and
  Ray's and Tune's own output (raylet warnings, Tune's experiment box, loggers, C++ lines on descriptor 2)
  goes to the log file the console names; `--verbose` keeps it on the terminal. These tests run in a
  fresh process: the redirection is of the process's own descriptors, which pytest's capture replaces.
- Tune's settings for a phase (`tkre.sweep.run.TUNE_SETTINGS`) hold only while it runs, and of Tune's
  per-trial loggers only the JSON one writes (result.json; no progress.csv or TensorBoard events)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sweep_helpers import golden_only_base, write_mini_dataset, write_sweep

ROUTES = textwrap.dedent("""
    import logging, os, sys, threading
    from rich.console import Console
    from tkre.cluster.quiet import quiet_console, terminal_file

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ray_like = logging.getLogger("ray.like")  # a library logger whose handler holds sys.stderr from before
    ray_like.propagate = False
    ray_like.addHandler(logging.StreamHandler(sys.stderr))
    cli = Console()  # like tkre.cli.options.console: rich's default file
    with quiet_console(sys.argv[1], consoles=[cli]) as path:
        print("LIB-print")
        sys.stderr.write("LIB-stderr\\n")
        os.write(1, b"LIB-fd1\\n")
        os.write(2, b"LIB-fd2 core_worker.cc\\n")  # what Ray's C++ core worker does
        t = threading.Thread(target=lambda: print("LIB-thread"))  # Ray's error-message thread
        t.start(); t.join()
        ray_like.warning("LIB-logger")
        logging.getLogger("tkre.sweep").info("TKRE-log")
        cli.print("TKRE-cli")
        Console(file=terminal_file()).print("TKRE-trial")
    print("AFTER-print")
    cli.print("AFTER-cli")
    with quiet_console(None):  # --verbose: nothing moves
        print("VERBOSE-print")
""")


def test_quiet_console_sends_only_tkre_output_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "console.log"
    out = subprocess.run([sys.executable, "-c", ROUTES, str(log)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.returncode == 0, out.stderr
    terminal = out.stdout + out.stderr
    assert "LIB-" not in terminal, terminal
    for line in ("TKRE-log", "TKRE-cli", "TKRE-trial", "AFTER-print", "AFTER-cli", "VERBOSE-print"):
        assert line in terminal, (line, terminal)
    assert f"own output (warnings, Tune's boxes): {log}" in out.stderr  # named once, at the start
    assert terminal.count(str(log)) == 1
    text = log.read_text()
    for line in ("LIB-print", "LIB-stderr", "LIB-fd1", "LIB-fd2 core_worker.cc", "LIB-thread", "LIB-logger",
                 "TKRE-log"):  # tkre's log records are in the file too, in order with the rest
        assert line in text, (line, text)
    assert "TKRE-cli" not in text and "AFTER" not in text and "VERBOSE" not in text


NOISE = re.compile(r"\(raylet\)|Configuration for experiment|View detailed results|tensorboard|core_worker|"
                   r"WARNING|Token authentication|╭")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": "local", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "tkre.cli", *args], capture_output=True, text=True, env=env,
                          timeout=840, cwd=str(cwd))


@pytest.mark.slow  # ~65 s (two sweeps); CI runs it after the README's command (.ci/run)
def test_sweep_console_is_quiet_and_verbose_keeps_ray_output(tmp_path, semeval, tiny_encoder_dir):
    data = write_mini_dataset(semeval, tmp_path / "data")
    base = golden_only_base(data, tiny_encoder_dir, tmp_path / "store", epochs=1)
    sweep = {"name": "quiet", "base": base, "min_free_gb": 0, "trial_timeout_s": 600,
             "variants": {"ok": {}, "broken": {"finetune.encoder": str(tmp_path / "no_such_model"),
                                                "pretrain.encoder": str(tmp_path / "no_such_model")}},
             "grid": {"variant": ["ok", "broken"]}, "resources": {"max_concurrent_trials": 2}}
    out = _cli(["sweep", str(write_sweep(tmp_path / "quiet.yaml", sweep))], tmp_path)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]
    assert not NOISE.search(console), console
    assert re.search(r"^trial \S+ \[ok\] finished dev_micro_f1 ", console, re.M), console
    assert re.search(r"^trial \S+ \[broken\] FAILED: .*no_such_model", console, re.M), console
    assert re.search(r"^2 of 2 trials done \(grid\)$", console, re.M), console
    [path] = re.findall(r"own output \(warnings, Tune's boxes\): (\S+) \(--verbose shows it here\)", console)
    log = Path(path)
    assert log.parent == tmp_path / "store" / "sweeps" / "quiet" / "logs", log
    text = log.read_text()
    assert "Configuration for experiment" in text and "View detailed results here" in text, text
    assert "trial " not in text.replace("Number of trials", "")  # the trial lines are the console's
    trial_dirs = list((tmp_path / "store" / "sweeps" / "quiet" / "grid").glob("run_trial_*"))
    assert len(trial_dirs) == 2 and all((d / "result.json").is_file() for d in trial_dirs), trial_dirs
    assert not [f for d in trial_dirs for f in d.iterdir() if f.name == "progress.csv" or "tfevents" in f.name]
    # --verbose: Ray's and Tune's output stays on the terminal (a one-trial sweep that fails at once)
    verbose = {**sweep, "name": "verbose", "grid": {"variant": ["broken"]}}
    out = _cli(["sweep", str(write_sweep(tmp_path / "verbose.yaml", verbose)), "--verbose"], tmp_path)
    console = out.stdout + out.stderr
    assert out.returncode == 1, console[-3000:]  # its only trial failed
    assert "Configuration for experiment" in console and "own output" not in console, console
    assert not (tmp_path / "store" / "sweeps" / "verbose" / "logs").exists()


def test_tune_settings_hold_only_inside_and_the_users_win(monkeypatch):
    from tkre.sweep.run import TUNE_SETTINGS, tune_settings

    for k in TUNE_SETTINGS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")  # the user's
    with tune_settings():
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ and "TUNE_PRINT_ALL_TRIAL_ERRORS" not in os.environ
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"

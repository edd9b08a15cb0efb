"""`tkre compare-generators <sweep.yaml>`: run a sweep whose variants are generator settings, then
write the report with its generator comparison (tkre/report/generators.py) -- one command.

Before anything runs:
- **prices**: a generator that bills per token (the `openai` backend against a non-local server)
  must have both `price_per_m_input_tokens` and `price_per_m_output_tokens`, or the command stops
  with an error naming the sweep file, variant and field -- a comparison "per dollar" without the
  dollars is not one, and it is cheaper to find out before the paid calls. (`tkre sweep`/`tkre run`
  only warn and report the cost as unknown.) Local generators (hf, vllm, openai on a loopback or
  private address) cost 0 unless prices are set.
- **local servers**: every `openai` generator whose `base_url` is a loopback address
  (`http://127.0.0.1:<port>/v1`) gets a `tkre serve --model <its model>` on that port for the
  duration of the run, unless something already answers there (then it is used as it is: the
  two-step way, `tkre serve ...` in one shell and this command in another, works too).

Generation-only comparisons (no pre-training or fine-tuning) are sweeps whose base switches
`stages.pretrain_stage1`, `stages.pretrain_stage2` and `stages.finetune` off; the shipped
`generators_compare` sweep is one. With fine-tuning on, the tables get dev/test micro-F1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tkre.config import ExperimentConfig, GeneratorConfig
from tkre.errors import ConfigError
from tkre.generate.quality import is_paid
from tkre.generate.serve import is_loopback
from tkre.sweep.config import SweepConfig, experiment_for, grid_points, load_sweep, resolve_sweep_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalServer:
    host: str
    port: int
    model: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def _generators(cfg: ExperimentConfig) -> list[tuple[str, GeneratorConfig]]:
    out = [("edkg.generator", cfg.edkg.generator)] if cfg.stages.edkg else []
    if cfg.stages.scdg:
        own = cfg.scdg.generator != cfg.edkg.generator  # else inherited (or set to the same): fix it there
        out.append(("scdg.generator" if own else "edkg.generator", cfg.scdg.generator))
    return out


def _settings(sweep: SweepConfig) -> list[tuple[str, ExperimentConfig]]:
    return [(str(p.get("variant", "base")), experiment_for(sweep, p)) for p in grid_points(sweep)]


def check_prices(sweep: SweepConfig, source: str) -> None:
    """A paid generator without both prices is an error naming the file, variant and field."""
    for variant, cfg in _settings(sweep):
        for where, gen in _generators(cfg):
            if is_paid(gen.backend, gen.openai.base_url):
                for f in ("price_per_m_input_tokens", "price_per_m_output_tokens"):
                    if getattr(gen, f) is None:
                        raise ConfigError(
                            f"{source}: variant {variant!r}: {where}.{f} is not set, but {gen.name} at "
                            f"{gen.openai.base_url} bills per token; set both prices (USD per million tokens) "
                            f"so the comparison can price it (0 if it is free for you)")


def local_servers(sweep: SweepConfig) -> list[LocalServer]:
    """The loopback OpenAI-compatible servers the sweep's generators talk to (one per host:port)."""
    found: dict[tuple[str, int], LocalServer] = {}
    for variant, cfg in _settings(sweep):
        for _, gen in _generators(cfg):
            if gen.backend != "openai":
                continue
            url = urlparse(gen.openai.base_url)
            if not url.hostname or not is_loopback(url.hostname):
                continue
            port = url.port or 80
            server = LocalServer(url.hostname, port, gen.model)
            other = found.setdefault((server.host, port), server)
            if other.model != server.model:
                raise ConfigError(f"variant {variant!r}: {gen.openai.base_url} would have to serve both "
                                  f"{other.model!r} and {server.model!r}; give each model its own port")
    return list(found.values())


def _answers(server: LocalServer, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def running(servers: list[LocalServer], *, start_timeout_s: float = 600.0, log_dir: Path | None = None):
    """Start `tkre serve` for every server that does not answer yet; stop those at the end."""
    started: list[subprocess.Popen] = []
    try:
        for s in servers:
            if _answers(s):
                log.info("using the server already at %s", s.base_url)
                continue
            out = open(log_dir / f"serve-{s.port}.log", "w") if log_dir else subprocess.DEVNULL
            cmd = [sys.executable, "-m", "tkre.cli", "serve", "--model", s.model, "--host", s.host,
                   "--port", str(s.port)]
            log.info("starting %s", " ".join(cmd[2:]))
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            started.append(proc)
            deadline = time.monotonic() + start_timeout_s
            while not _answers(s):
                if proc.poll() is not None:
                    raise ConfigError(f"tkre serve --model {s.model} --port {s.port} exited with code "
                                      f"{proc.returncode}" + (f" (log: {out.name})" if log_dir else ""))
                if time.monotonic() > deadline:
                    raise ConfigError(f"tkre serve on {s.base_url} did not answer within {start_timeout_s:.0f}s")
                time.sleep(1.0)
        yield servers
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and nothing else
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def compare_generators(sweep_file: str | Path, *, resume: bool = False, storage_path: str | None = None,
                       address: str | None = None):
    """Check prices, start local servers, run the sweep, write the report; returns (outcome, report)."""
    from tkre.report.tables import write_report
    from tkre.sweep.run import run_sweep, sweep_dir

    path = resolve_sweep_file(sweep_file)
    sweep = load_sweep(path)
    check_prices(sweep, str(path))
    storage = (storage_path or os.environ.get("TKRE_STORAGE_PATH") or sweep.storage_path
               or experiment_for(sweep, grid_points(sweep)[0]).storage_path)
    logs = Path(sweep_dir(sweep, storage)) if "://" not in storage else None
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    with running(local_servers(sweep), log_dir=logs):
        outcome = run_sweep(path, resume=resume, address=address, storage_path=storage_path)
    return outcome, write_report(outcome.sweep_dir)

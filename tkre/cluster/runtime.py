"""Starting or joining Ray, one way for every entry point (sweeps, generation, training, evaluation).

- Address: the one given (`--address auto`), else `RAY_ADDRESS` (set by `ray job submit`), else a
  fresh local instance -- never silently joining another process's local cluster.
- Workers on a cluster get the user's settings (HF offline flags, W&B project, ...) through the runtime
  env (`tkre.cluster.cluster_yaml.driver_runtime_env`), but never a secret: Ray writes every runtime env
  to the session's `logs/runtime_env_agent.log` and shows it in the dashboard. A local Ray inherits the
  driver's environment (keys included) plus the `WORKER_DEFAULTS` the driver lacks, set only while Ray
  starts (`environ_defaults`), and gets no runtime env: a job with one cannot use the worker
  processes Ray starts ahead (one per CPU) and starts its own for its first actors and tasks, ~1 s
  each at a sweep's start on 2 cores (benchmarks/sweep_overhead.py). On a cluster the openai
  backend's actors get their key as a hidden call argument, W&B logs from the driver itself
  (`tkre.sweep.tracking`), and the driver's `WORKER_SECRETS` (HF_TOKEN: gated Hub models, loaded by
  vLLM engines and Train workers on any node) reach every worker process of the job through a
  `worker_process_setup_hook` (Ray's public runtime-env field): the hook is a function that Ray
  pickles into its GCS, while the runtime env and its log show only the hook's name. Anything else
  reads the nodes' own environment (docs/cluster.md, "Secrets on a cluster").
- A Ray that cannot start (an overloaded machine, a leftover instance, a wrong RAY_ADDRESS) is one
  line with the reason and a hint (`tkre.errors.RayStartError`), not a traceback.
- A local sweep asks for Ray's dashboard (`dashboard=True`) and gets it when its dependencies are
  installed (`pip install "ray[default]"`; the modules `DASHBOARD_MODULES`, the ones Ray's dashboard
  imports), its address logged; a minimal Ray has none, and the log line says how to add it. Other
  entry points start Ray without it (less start-up on a loaded machine); a cluster keeps its own.
- Worker output stays in Ray's log files (the path is logged) unless `log_to_driver=True`, and Ray's
  own INFO lines on the driver are off (warnings stay): tkre's progress bars and per-trial sweep
  lines (`tkre.console`) are what a user reads on the console.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager

from tkre.errors import RayStartError

log = logging.getLogger(__name__)

#: Quiet defaults for worker processes (transformers load reports and the like), unless the user set them.
WORKER_DEFAULTS = {"TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TRANSFORMERS_VERBOSITY",
             "TOKENIZERS_PARALLELISM")


#: secrets the driver hands to its Ray workers on a cluster (`secret_setup_hook`); a worker whose node
#: sets one itself keeps its own value
WORKER_SECRETS = ("HF_TOKEN",)


def secret_setup_hook(environ: dict[str, str] | None = None):
    """A `worker_process_setup_hook` that sets the driver's `WORKER_SECRETS` in each worker process of
    the job (None when the driver has none). The values live only in the function's closure: Ray pickles
    it into its GCS and shows the name `tkre_worker_secrets`, never the values."""
    environ = os.environ if environ is None else environ
    values = {k: environ[k] for k in WORKER_SECRETS if environ.get(k)}
    if not values:
        return None

    def tkre_worker_secrets() -> None:
        import os as _os

        for name, value in values.items():
            _os.environ.setdefault(name, value)

    return tkre_worker_secrets


#: what Ray's dashboard imports before it starts (ray/dashboard/optional_deps.py); `ray[default]` brings them
DASHBOARD_MODULES = ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "opentelemetry", "prometheus_client",
                     "pydantic")


def dashboard_installed() -> bool:
    """True when Ray's dashboard can start here: every module it imports is installed."""
    return all(importlib.util.find_spec(m) is not None for m in DASHBOARD_MODULES)


def init_ray(address: str | None = None, *, log_to_driver: bool | None = None, dashboard: bool = False) -> None:
    """Initialise Ray in this process if it is not already (see the module docstring); `dashboard`:
    start Ray's dashboard with a local Ray when it is installed (sweeps)."""
    import ray

    if ray.is_initialized():
        return
    from tkre.cluster.cluster_yaml import driver_runtime_env

    extra = {**WORKER_DEFAULTS, **{k: os.environ[k] for k in FORWARDED if k in os.environ}}
    if log_to_driver is None:
        log_to_driver = os.environ.get("TKRE_LOG_TO_DRIVER", "0") == "1"
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    with_dashboard = dashboard and target == "local" and dashboard_installed()
    if dashboard and target == "local" and not with_dashboard:
        log.info('Ray dashboard off: it needs `pip install "ray[default]"`')
    local = {"include_dashboard": with_dashboard} if target == "local" else {}  # a cluster keeps its own
    if target == "local":  # Ray's processes inherit this environment: no runtime env (see below)
        runtime_env, inherited = {}, extra
    else:
        runtime_env, inherited = driver_runtime_env(extra=extra), {}
        hook = secret_setup_hook()
        if hook is not None:
            runtime_env["worker_process_setup_hook"] = hook
            log.info("handing %s to Ray workers through a worker setup hook", ", ".join(
                k for k in WORKER_SECRETS if os.environ.get(k)))
    try:
        with environ_defaults(inherited):
            context = ray.init(address=target, ignore_reinit_error=True, **local, log_to_driver=log_to_driver,
                               runtime_env=runtime_env,
                               logging_level=logging.INFO if log_to_driver else logging.WARNING)
    except Exception as e:  # noqa: BLE001 -- whatever Ray raised, the user gets one line and a hint
        try:
            ray.shutdown()  # processes a half-done start may have left
        except Exception:  # noqa: BLE001
            pass
        raise RayStartError(ray_start_message(e, target)) from e
    if with_dashboard and context.dashboard_url:
        log.info("Ray dashboard: http://%s", context.dashboard_url)
    session = context.address_info.get("session_dir")  # what ray.init returns (RayContext), public
    if not log_to_driver and session:
        log.info("Ray worker logs: %s/logs (TKRE_LOG_TO_DRIVER=1 prints them on the driver)", session)


@contextmanager
def environ_defaults(values: dict[str, str]):
    """The `values` whose keys this process has not set, in os.environ for the block and removed
    after it (the user's own settings win and stay). Processes started in the block inherit them:
    a local Ray's, and the workers its raylet starts later."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def ray_start_message(error: BaseException, target: str) -> str:
    """One line: why Ray did not start, and what usually fixes it."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    reason = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]
    if target == "local":
        hint = ("an overloaded or memory-short machine makes Ray's start-up time out: free memory/CPUs "
                "and retry; `ray stop` ends Ray processes left by an earlier run; RAY_TMPDIR must be a "
                "writable directory")
    else:
        hint = (f"joining {target!r} failed: check that the cluster is up (`ray status`), the address "
                "(--address / RAY_ADDRESS; unset RAY_ADDRESS to start a local Ray) and your network")
    return f"Ray could not start ({target}): {reason}. Hint: {hint}"

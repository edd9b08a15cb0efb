"""Starting or joining Ray, one way for every entry point (sweeps, generation, training, evaluation).

- Address: the one given (`--address auto`), else `RAY_ADDRESS` (set by `ray job submit`), else a
  fresh local instance -- never silently joining another process's local cluster.
- Workers get the settings and secrets of the user's shell through the runtime env
  (`tkre.cluster.driver_runtime_env`: W&B/OpenAI keys, HF offline flags), never through a file.
- Worker output stays in Ray's log files (the path is logged) unless `log_to_driver=True`: tkre's
  own progress bars and Tune's status table are what a user reads on the console.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Quiet defaults for worker processes (transformers load reports and the like), unless the user set them.
WORKER_DEFAULTS = {"TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TRANSFORMERS_VERBOSITY",
             "TOKENIZERS_PARALLELISM")


def init_ray(address: str | None = None, *, log_to_driver: bool | None = None) -> None:
    """Initialise Ray in this process if it is not already (see the module docstring)."""
    import ray

    if ray.is_initialized():
        return
    from tkre.cluster import driver_runtime_env

    extra = {**WORKER_DEFAULTS, **{k: os.environ[k] for k in FORWARDED if k in os.environ}}
    if log_to_driver is None:
        log_to_driver = os.environ.get("TKRE_LOG_TO_DRIVER", "0") == "1"
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=log_to_driver, runtime_env=driver_runtime_env(extra=extra))
    if not log_to_driver:
        try:
            session = ray._private.worker._global_node.get_session_dir_path()
            log.info("Ray worker logs: %s/logs (TKRE_LOG_TO_DRIVER=1 shows them here)", session)
        except AttributeError:  # private API moved: the path is only informative
            pass

"""W&B logging for sweeps: which mode to run in, and Ray Tune's W&B callback without a key on disk.

- Mode: the user's `WANDB_MODE` if set; else online when a key is configured -- `WANDB_API_KEY`, or
  an existing `wandb login` (~/.netrc, wandb settings), asked of wandb itself without network
  (`wandb.login(prompt=False, verify=False)`); else offline (runs kept on disk, `wandb sync` later).
- Ray's `WandbLoggerCallback` hands `WANDB_API_KEY` to its logging actors through a `runtime_env`,
  which Ray writes to the session's `logs/runtime_env_agent.log` and shows in the dashboard.
  `KeyedWandbLoggerCallback` builds the logging actors without a runtime env and passes the key as a
  hidden constructor argument (`pydantic.SecretStr`), set in that actor's own process environment.
  The subclass touches two private members of Ray's callback (`_remote_logger_class`,
  `_logger_actor_cls`); tests/test_secrets.py catches a Ray release that changes them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def wandb_key_configured() -> bool:
    """True when W&B has an API key: WANDB_API_KEY or an existing `wandb login` (no network)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return False
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # wandb prints "API key is configured"
            return bool(wandb.login(prompt=False, verify=False))
    except Exception as e:  # noqa: BLE001 -- a broken settings file: behave as "no login"
        log.debug("wandb login check failed: %s", e)
        return False


def wandb_mode() -> str | None:
    """The mode a sweep logs in: WANDB_MODE, else None (online: a key is configured), else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return None if wandb_key_configured() else "offline"


def settle_wandb_mode() -> str | None:
    """`wandb_mode()`, made this process's WANDB_MODE when it is offline for want of a key: W&B's Tune
    callback (a new one, or one a restored Tuner unpickles) then skips its key check."""
    mode = wandb_mode()
    if mode == "offline" and not os.environ.get("WANDB_MODE"):
        log.info("W&B: no API key and no `wandb login`: runs stay offline on disk (`wandb sync` them later)")
        os.environ["WANDB_MODE"] = "offline"
    return mode


def wandb_callbacks(*, enabled: bool, project: str, group: str, directory: str | None) -> list:
    """Tune callbacks for W&B ([] when switched off or wandb is missing)."""
    if not enabled or os.environ.get("WANDB_MODE") == "disabled":
        return []
    try:
        import ray.air.integrations.wandb  # noqa: F401
    except ImportError:  # pragma: no cover
        log.warning("wandb not installed: W&B logging off")
        return []
    mode = settle_wandb_mode()
    kwargs: dict[str, Any] = {"mode": mode} if mode else {}
    if directory:
        kwargs["dir"] = directory
    return [_keyed_callback_class()(project=project, group=group, **kwargs)]


def _keyed_callback_class():
    import ray
    from pydantic import SecretStr
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
    from ray.air.util.node import _force_on_current_node

    class KeyedWandbLoggingActor(_WandbLoggingActor):
        def __init__(self, *args: Any, api_key: SecretStr | None = None, **kwargs: Any):
            if api_key is not None:
                os.environ["WANDB_API_KEY"] = api_key.get_secret_value()
            super().__init__(*args, **kwargs)

    class KeyedWandbLoggerCallback(WandbLoggerCallback):
        _logger_actor_cls = KeyedWandbLoggingActor

        def _start_logging_actor(self, trial: Any, exclude_results: list, **wandb_init_kwargs: Any) -> None:
            if not self._remote_logger_class:  # Ray's own would carry the key in a runtime_env
                self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(), max_restarts=-1,
                                                       max_task_retries=-1)(self._logger_actor_cls)
            key = os.environ.get("WANDB_API_KEY")
            if key and wandb_init_kwargs.get("mode") not in ("offline", "disabled"):
                wandb_init_kwargs["api_key"] = SecretStr(key)
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    return KeyedWandbLoggerCallback

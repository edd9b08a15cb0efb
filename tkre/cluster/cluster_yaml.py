"""The `ray up` cluster file: offline validation against Ray's autoscaler schema, node shapes, secrets.

Ray validates a cluster file with two functions that live in a private module
(`ray.autoscaler._private.util.prepare_config` fills in the provider defaults, `validate_config` checks
the result against `ray/autoscaler/ray-schema.json`). Neither talks to the cloud: the defaults come
from a YAML file shipped inside Ray. They are imported in ONE place, `_ray_autoscaler_validators()`,
so a Ray upgrade that moves them fails with a message saying what to change, not an ImportError deep
inside a test.

`node_shapes(config)` turns the node types into what the resource checks of tkre/cluster/resources.py need:
per-type resources and how many nodes of that type the autoscaler may start.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from tkre.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

#: Where `ray up` leaves the prepared cluster file on the head node.
HEAD_BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"

#: Settings tkre forwards from the submitting shell to Ray workers through the runtime env. Never a
#: secret: Ray writes runtime envs to the session's logs/runtime_env_agent.log and shows them in the
#: dashboard. Secrets (SECRET_ENV) reach workers from their own environment (a local Ray inherits the
#: driver's) or as call arguments of the actors that use them (openai backend, W&B logging actors).
PASSTHROUGH_ENV = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_BASE_URL", "OPENAI_BASE_URL",
                   "TKRE_STORAGE_PATH")
SECRET_ENV = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for variables that hold secrets (the known ones, and any *KEY*/*TOKEN*/*SECRET*/... name)."""
    return name in SECRET_ENV or bool(_SECRET_NAME.search(name))

# Shapes of well-known API keys / secrets that must never appear in a committed cluster file.
_SECRET_PATTERNS = {
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "W&B API key": re.compile(r"\b[0-9a-f]{40}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    "secret assignment": re.compile(
        r"\b[A-Z0-9_]*(API_KEY|SECRET|SECRET_ACCESS_KEY|TOKEN|PASSWORD)\b\s*[=:]\s*['\"]?(?!\$)[A-Za-z0-9/+_-]{12,}",
        re.IGNORECASE),
}


def _ray_autoscaler_validators() -> tuple[Callable[[dict], dict], Callable[[dict], None]]:
    """Ray's own (private) `prepare_config` and `validate_config`, or a clear error if they moved."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as e:  # pragma: no cover - only on a Ray upgrade
        import ray

        raise MissingDependencyError(
            f"ray {ray.__version__} no longer provides ray.autoscaler._private.util.prepare_config/"
            f"validate_config ({e}); tkre was written against Ray 2.60: update "
            "tkre/cluster/cluster_yaml.py:_ray_autoscaler_validators to the new location (or validate with "
            "ray/autoscaler/ray-schema.json via jsonschema after filling the provider defaults)") from e
    return prepare_config, validate_config


def load_cluster_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a cluster file as a dict (ConfigError if missing or not YAML)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such cluster file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def validate_cluster_config(config: dict[str, Any], source: str = "cluster.yaml") -> dict[str, Any]:
    """Fill provider defaults and validate with Ray's autoscaler schema, offline; return the prepared config.

    Raises ConfigError naming the file and the failing path in the config."""
    prepare_config, validate_config = _ray_autoscaler_validators()
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except Exception as e:  # jsonschema.ValidationError, ValueError, NotImplementedError (provider)
        where = ".".join(str(p) for p in getattr(e, "absolute_path", [])) or "(top level)"
        message = getattr(e, "message", None) or str(e)
        raise ConfigError(f"{source}: {where}: {message}") from None
    return prepared


def secret_findings(text: str) -> list[str]:
    """Names of secret-looking literals in a file's text (empty = clean). Never returns the values."""
    found = []
    for name, pattern in _SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {name}")
    return found


def docker_env(config: dict[str, Any]) -> dict[str, str]:
    """`--env NAME=value` pairs set for every container by docker.run_options."""
    env: dict[str, str] = {}
    for option in (config.get("docker") or {}).get("run_options") or []:
        m = re.match(r"^\s*(?:--env|-e)[ =]([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", str(option))
        if m:
            env[m.group(1)] = m.group(2)
    return env


@dataclass(frozen=True)
class NodeShape:
    """One kind of node: its Ray resources and how many of them can exist at most."""

    name: str
    resources: dict[str, float]
    max_count: int


def node_shapes(config: dict[str, Any]) -> list[NodeShape]:
    """Node types of a (raw or prepared) cluster file; the head counts once, workers up to max_workers.

    A worker type's count is min(its max_workers, the global max_workers). Types without explicit
    `resources` (left to Ray's cloud auto-detection) cannot be checked offline and are skipped with a
    warning."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    global_max = int(config.get("max_workers", 2))
    shapes = []
    for name, spec in types.items():
        resources = spec.get("resources")
        if not resources:
            log.warning("cluster node type %s declares no resources; it is left out of the capacity check", name)
            continue
        count = 1 if name == head else min(int(spec.get("max_workers", global_max)), global_max)
        if count > 0:
            shapes.append(NodeShape(name, {k: float(v) for k, v in resources.items()}, count))
    return shapes


def head_bootstrap_config() -> dict[str, Any] | None:
    """The prepared cluster file `ray up` left on this (head) node, or None elsewhere."""
    p = Path(HEAD_BOOTSTRAP_CONFIG).expanduser()
    return load_cluster_yaml(p) if p.is_file() else None


def passthrough_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The PASSTHROUGH_ENV variables set in `environ` (default os.environ), for a Ray runtime_env.

    Settings only: secrets are never put in a runtime env (Ray logs it; see PASSTHROUGH_ENV)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in PASSTHROUGH_ENV if environ.get(k) and not is_secret_name(k)}


def driver_runtime_env(names: tuple[str, ...] = PASSTHROUGH_ENV, environ: dict[str, str] | None = None,
                       extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The `runtime_env` for the sweep driver's `ray.init`: the listed variables present in `environ`
    (+ `extra`), minus the ones a `ray job submit --runtime-env-json` job already sets.

    Ray refuses to start a submitted job's driver whose ray.init env_vars repeat a key of the job's
    runtime env (even with the same value), and the job's env_vars already reach every worker. Values
    are never logged."""
    environ = os.environ if environ is None else environ
    job_env: dict[str, str] = {}
    raw = environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the entrypoint
    if raw:
        try:
            job_env = ((json.loads(raw).get("runtime_env") or {}).get("env_vars")) or {}
        except (ValueError, AttributeError):
            job_env = {}
    env = {k: environ[k] for k in names if environ.get(k)}
    env.update(extra or {})
    env = {k: v for k, v in env.items() if k not in job_env and not is_secret_name(k)}  # never a secret
    if env:
        log.info("forwarding to Ray workers: %s", ", ".join(sorted(env)))
    return {"env_vars": env} if env else {}

"""The `ray up` cluster file: offline validation against Ray's autoscaler schema, node shapes, secrets.

`validate_cluster_config` does offline what `ray up` does to a cluster file before it launches anything:
merge the provider's defaults (`ray/autoscaler/<provider>/defaults.yaml`), check the result against
`ray/autoscaler/ray-schema.json` (jsonschema), check the node types (the head type is one of them, the
workers' `min_workers` fit `max_workers`), then prepend `setup_commands` to the head's and the workers'
setup commands and give each node type its `min_workers`/`max_workers`. Both files are data Ray ships
in its public `ray.autoscaler` package; no Ray module is imported and nothing talks to the cloud (no
credentials, no boto3).

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
from typing import Any

import yaml

from tkre.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

#: Where `ray up` leaves the prepared cluster file on the head node.
HEAD_BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"

#: Settings tkre forwards from the submitting shell to Ray workers through the runtime env. Never a
#: secret: Ray writes runtime envs to the session's logs/runtime_env_agent.log and shows them in the
#: dashboard. Secrets (SECRET_ENV) reach workers from their own environment (a local Ray inherits the
#: driver's) or as call arguments of the actors that use them (openai backend); W&B logs from the driver.
PASSTHROUGH_ENV = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_BASE_URL", "OPENAI_BASE_URL",
                   "TKRE_STORAGE_PATH")
SECRET_ENV = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")
# a whole word of the name (TOKENIZERS_PARALLELISM is a setting, HF_TOKEN a secret)
_SECRET_NAME = re.compile(r"(?:^|_)(?:KEYS?|TOKENS?|SECRETS?|PASSWORDS?|CREDENTIALS?)(?:_|$)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True for variables that hold secrets (the known ones, and any name with a word KEY, TOKEN, SECRET, ...)."""
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


#: Providers whose cluster files tkre prepares: Ray ships `ray/autoscaler/<type>/defaults.yaml` for each.
CLOUD_PROVIDERS = ("aws", "gcp", "azure", "vsphere")


def _ray_autoscaler_file(name: str) -> str:
    """The text of a data file in Ray's `ray.autoscaler` package (its schema, a provider's defaults)."""
    from importlib.resources import files

    try:
        return files("ray.autoscaler").joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as e:  # pragma: no cover - only on a Ray upgrade
        import ray

        raise MissingDependencyError(
            f"ray {ray.__version__} ships no ray/autoscaler/{name} ({e}); tkre was written against Ray 2.60: "
            "update tkre/cluster/cluster_yaml.py:validate_cluster_config") from e


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
    """The cluster file as `ray up` would launch it, checked offline: provider defaults merged in, the
    result valid against Ray's autoscaler schema, the node types consistent, setup commands merged per
    role and each node type's min/max workers filled. Returns a new dict; raises ConfigError naming the
    file and the failing place in it."""
    import jsonschema

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {where}: {message}")

    provider = (config.get("provider") or {}).get("type") if isinstance(config.get("provider"), dict) else None
    if provider not in CLOUD_PROVIDERS:
        raise fail("provider.type", f"{provider!r}: tkre checks cluster files for {', '.join(CLOUD_PROVIDERS)}")
    if "available_node_types" not in config:
        raise fail("available_node_types", "required (tkre reads the node types from it; the legacy "
                   "head_node/worker_nodes form is not supported)")
    prepared = yaml.safe_load(_ray_autoscaler_file(f"{provider}/defaults.yaml"))
    prepared.update(copy.deepcopy(config))  # top-level keys replace the defaults' (as in `ray up`)
    prepared.setdefault("auth", {})
    prepared.pop("min_workers", None)
    for legacy in ("head_node", "worker_nodes"):  # `ray up` drops them when empty
        if legacy in prepared and not prepared[legacy]:
            del prepared[legacy]

    schema = json.loads(_ray_autoscaler_file("ray-schema.json"))
    try:
        jsonschema.validate(prepared, schema)
    except jsonschema.ValidationError as e:
        raise fail(".".join(str(p) for p in e.absolute_path) or "(top level)", e.message) from None

    types = prepared["available_node_types"]
    head = prepared.get("head_node_type")
    if head not in types:
        raise fail("head_node_type", f"{head!r} is not one of available_node_types ({', '.join(types)})")
    if sum(t.get("min_workers", 0) for t in types.values()) > prepared["max_workers"]:
        raise fail("max_workers", f"{prepared['max_workers']} is less than the node types' min_workers together")
    docker = prepared.get("docker") or {}
    image = docker.get("image") or (docker.get("head_image") and docker.get("worker_image"))
    if bool(docker.get("container_name")) != bool(image):
        raise fail("docker", "container_name and image go together (both or neither)")

    for role in ("head", "worker"):
        prepared[f"{role}_setup_commands"] = prepared["setup_commands"] + prepared[f"{role}_setup_commands"]
    for name, spec in types.items():
        spec.setdefault("min_workers", 0)
        spec.setdefault("max_workers", 0 if name == head else prepared["max_workers"])
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

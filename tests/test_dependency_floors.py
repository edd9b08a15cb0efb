"""pyproject.toml's version floors are at least the versions whose APIs tkre uses (issue 14, item 11).

`USED_APIS` is the table: for each API whose first release is above an older floor, the distribution,
the first version that has it, and a pattern that finds its use in tkre/. The test fails when a floor in
pyproject.toml (dependencies and every extra) is below the table, when a requirement has no floor, or
when an entry's API is no longer used (then the entry goes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]

USED_APIS = [
    # (distribution, first version with the API, pattern in tkre/*.py, what)
    ("ray", "2.60", r"from ray\.tune\.integration\.ray_train import TuneReportCallback",
     "Ray Train V2 inside Tune trials (TuneReportCallback)"),
    ("wandb", "0.19.10", r'reinit="create_new"', "several W&B runs in one process (tkre/sweep/tracking.py)"),
    ("transformers", "4.56", r"from_pretrained\([^)]*\bdtype=",
     "from_pretrained(dtype=...) (torch_dtype= before 4.56)"),
    ("vllm", "0.11", r"from vllm\.sampling_params import StructuredOutputsParams",
     "SamplingParams(structured_outputs=StructuredOutputsParams(...)) (guided_decoding before; "
     "tkre/generate/backends/vllm.py)"),
]


def _requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        out += [(f"extra {extra}", Requirement(r)) for r in reqs]
    return out


def floor(req: Requirement) -> Version | None:
    """The lowest version a requirement allows (from >=, ==, ~=, >), or None if it has no floor."""
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=", ">")]
    return max(lows) if lows else None


def _tkre_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "tkre").rglob("*.py")))


@pytest.mark.parametrize("dist, first, pattern, what", USED_APIS, ids=[f"{d}>={v}" for d, v, *_ in USED_APIS])
def test_declared_floor_covers_the_api_in_use(dist, first, pattern, what):
    assert re.search(pattern, _tkre_source()), f"{what}: no longer used in tkre/; drop this entry"
    reqs = [(where, r) for where, r in _requirements() if r.name.lower() == dist]
    assert reqs, f"{dist} is used ({what}) but not declared in pyproject.toml"
    for where, req in reqs:
        low = floor(req)
        assert low is not None, f"{where}: {req} has no lower bound; {what} needs {dist}>={first}"
        assert low >= Version(first), f"{where}: {req} allows {dist} {low}, but {what} needs >= {first}"


def test_floor_parsing():
    assert floor(Requirement("ray[tune]>=2.50,<3")) == Version("2.50")
    assert floor(Requirement("vllm==0.29.0")) == Version("0.29.0")
    assert floor(Requirement("x<3")) is None


def _third_party_imports(folder: str) -> dict[str, set[str]]:
    """Top-level modules that folder's files import (absolute imports, the standard library and the
    project's own modules left out) -> the files importing them."""
    import ast
    import sys

    own = {"tkre", "conftest"} | {p.stem for p in (ROOT / "tests").glob("*.py")}
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own and top != "__future__":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("folder, sections", [("tkre", ("dependencies", "extra ")), ("tests", None)])
def test_every_third_party_import_is_declared(folder, sections):
    """What tkre/ imports is declared in pyproject.toml's dependencies (or an extra, for optional
    backends); what tests/ imports also in the dev extra: nothing may come only through another
    package's requirements, or from a package installed by hand."""
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {norm(r.name) for where, r in _requirements() if sections is None or where.startswith(sections)}
    dists = packages_distributions()
    missing = {}
    for module, files in _third_party_imports(folder).items():
        names = {norm(d) for d in dists.get(module, [])} or {norm(module)}  # not installed: its own name
        if not names & declared:
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported in {folder}/ but not declared in pyproject.toml: {missing}"

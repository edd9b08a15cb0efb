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
    ("ray", "2.60", r"\b(chat_template_stage|tokenize_stage|detokenize_stage)\s*=",
     "ray.data.llm processor stage-config fields (tkre/generate/backends/vllm.py)"),
    ("ray", "2.60", r"from ray\.tune\.integration\.ray_train import TuneReportCallback",
     "Ray Train V2 inside Tune trials (TuneReportCallback)"),
    ("transformers", "4.56", r"from_pretrained\([^)]*\bdtype=",
     "from_pretrained(dtype=...) (torch_dtype= before 4.56)"),
    ("vllm", "0.29", r"from ray\.data\.llm import", "the vLLM that Ray 2.60's `llm` extra is built for"),
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

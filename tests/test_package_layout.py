"""The package's floor plan stays readable: subpackages instead of name prefixes, few modules at the
top, small files, and the stage graph's keys made in one place."""

import re
from collections import Counter
from pathlib import Path

import tkre

ROOT = Path(tkre.__file__).resolve().parent


def test_top_level_is_a_few_leaves_without_prefix_families():
    top = sorted(p.stem for p in ROOT.glob("*.py"))
    assert len(top) <= 16, top
    prefixes = Counter(name.split("_")[0] for name in top if "_" in name.strip("_"))
    families = {p: n for p, n in prefixes.items() if n > 1 or (ROOT / p).is_dir() or f"{p}" in top}
    assert not families, f"modules named by a prefix (make them a subpackage): {families}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


def test_artifact_keys_are_made_in_one_module():
    callers = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
               if re.search(r"(?<!def )\bartifact_key\(", p.read_text(encoding="utf-8"))}
    assert callers == {"pipeline.py"}, callers

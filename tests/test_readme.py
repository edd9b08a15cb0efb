"""README promises: two commands first (quickstart, tests); .ci/run runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_quickstart_and_test_commands():
    quick, tests = _first_commands()
    assert "tkre quickstart" in quick
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _first_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci

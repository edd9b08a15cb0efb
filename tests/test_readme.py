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
    # as a new user would: in a new venv, with an empty home; after it only the slow tests CI runs anyway,
    # and only once the README's command passed
    at = ci.index(tests)
    before = "\n".join(ci[:at])
    assert re.search(r"-m venv ", before) and re.search(r"^source .*/bin/activate", before, re.M)
    assert re.search(r'^export HOME="?\$', before, re.M)
    after = [ln.strip() for ln in ci[at + 1:] if ln.strip() and not ln.lstrip().startswith("#")]
    assert after[:1] == ['[ "$?" -eq 0 ] || exit 1'], after
    assert all(re.fullmatch(r"python -m pytest --run-slow( -m slow)?( tests/test_\w+\.py)+", ln) for ln in after[1:]), after
    assert re.search(r"^set -euo pipefail$", before, re.M)


def _user_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_a_front_door():
    """At most 300 lines; the rest lives in docs/, and the README links every page there."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in text, page.name


def test_readme_lists_every_shipped_sweep():
    text = (ROOT / "README.md").read_text()
    for sweep in sorted((ROOT / "tkre" / "sweeps").glob("*.yaml")):
        assert f"| `{sweep.stem}` |" in text, sweep.stem


def test_user_docs_links_resolve():
    """Every relative link in the README and docs/*.md names a file that exists (anchors not checked)."""
    for doc in _user_docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (doc.parent / target.split("#")[0]).exists(), (doc.name, target)


def test_user_docs_carry_no_development_history():
    """No issue numbers or commit hashes in the README and docs/*.md: facts and numbers, not history."""
    for doc in _user_docs():
        text = doc.read_text()
        assert not re.search(r"\bissues? #?\d+", text, flags=re.I), doc.name
        hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text)
                  if re.search(r"\d", w) and re.search(r"[a-f]", w)]
        assert not hashes, (doc.name, hashes)

"""tkre uses Ray's, Optuna's and W&B's public APIs only: no `_private` module, no `_name` taken from one
of their objects or modules. Private members change without notice between minor releases (Ray's
`_WandbLoggingActor`, a searcher's `_ot_study`, `ray._private.worker` all did or may), and pyproject.toml
allows any Ray 2.x from 2.60 on. A grep over tkre/'s source, as a reviewer would run it: any line that
names one of these libraries (or a Tune/Optuna object) and reaches for an underscore name is a finding."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tkre"

LIBRARY = re.compile(r"ray|optuna|tune|wandb|study|searcher|sampler|trial")  # their objects, lower case
NAMEDTUPLE = r"(?!_asdict\b|_replace\b|_fields\b|_make\b)"  # namedtuple's public API starts with _
PRIVATE = [
    re.compile(r"_private"),  # ray._private, ray.autoscaler._private, ...
    re.compile(rf"\b(?!self\b|cls\b)\w+\.{NAMEDTUPLE}_[A-Za-z]"),  # obj._attr on anything but our own objects
    re.compile(r"\)\._[A-Za-z]"),  # super()._method(), f()._attr
    re.compile(r"from\s+(ray|optuna|wandb)\S*\s+import\s+.*\b_[A-Za-z]"),  # private names imported
]


def findings(root: Path = ROOT) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if LIBRARY.search(line) and any(p.search(line) for p in PRIVATE):
                hits.append(f"{path.relative_to(root.parent)}:{n}: {line.strip()}")
    return hits


def test_no_private_ray_optuna_or_wandb_names_in_tkre():
    hits = findings()
    assert not hits, "private names of Ray/Optuna/W&B in tkre/:\n" + "\n".join(hits)


def test_the_check_finds_what_it_forbids(tmp_path):
    """The patterns catch each kind of private use tkre once had (so the test above can fail)."""
    (tmp_path / "m.py").write_text("\n".join([
        "session = ray._private.worker._global_node.get_session_dir_path()",
        "run_config = tuner._local_tuner.get_run_config()",
        "study = state['_ot_study'] if x else searcher._ot_study",
        "from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor",
        "        super()._start_logging_actor(trial, exclude_results)",
        "        if self._tokenizer is None:  # our own attribute: fine",
        "ready, _ = ray.wait([self._pending], timeout=0)",
        '"requests": [r._asdict() for r in requests], "concurrent_trials": 2}',
    ]))
    assert len(findings(tmp_path)) == 5, findings(tmp_path)

"""`tkre sweep FILE --plan [--json]`: every trial, shared artifacts and resources, without Ray."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tkre.config import ExperimentConfig
from tkre.sweep.config import load_sweep, packaged_sweeps_dir
from tkre.sweep.plan import plan_trials, shared_artifacts

SHIPPED = sorted(p.stem for p in packaged_sweeps_dir().glob("*.yaml"))


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray during a plan is a failure."""
    import tkre.cluster.runtime

    def refuse(*a, **k):
        raise AssertionError("the plan started Ray")
    monkeypatch.setattr(tkre.cluster.runtime, "init_ray", refuse)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_declared_variant_of_a_shipped_sweep_is_reached(name, no_ray):
    sweep = load_sweep(packaged_sweeps_dir() / f"{name}.yaml")
    trials = plan_trials(sweep)
    assert trials
    reached = {t.variant for t in trials}
    missing = set(sweep.variants) - reached
    assert not missing, f"{name}: variants declared but never run: {sorted(missing)}"


def test_plan_json_lines_hold_the_resolved_config(no_ray):
    r = CliRunner().invoke(_app(), ["sweep", "paper_table2", "--plan", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert len(rows) == 4 * 3 * 5 * 2 * 2 and len({row["name"] for row in rows}) == len(rows)
    golden = {(row["config"]["data"]["dataset"], row["config"]["finetune"]["backbone"])
              for row in rows if row["variant"] == "golden_only"}
    assert golden == {(d, b) for d in ("semeval", "tacred", "tacrev", "retacred") for b in ("typ_marker", "genpt")}
    for row in rows:
        cfg = ExperimentConfig.model_validate(row["config"])  # fully resolved and valid
        assert cfg.edkg.max_new_tokens >= 512 and cfg.scdg.max_rounds >= 5
    fig6 = CliRunner().invoke(_app(), ["sweep", "synthetic_scale_fig6", "--plan", "--json"])
    assert any(not json.loads(line)["config"]["stages"]["scdg"] for line in fig6.output.splitlines())


def test_plan_shows_trials_shared_artifacts_and_resources(tmp_path, no_ray):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "demo", "base": {"data": {"k": 8}, "finetune": {"resources": {"num_workers": 2}}},
        "variants": {"tkre": {}, "golden_only": {"stages.edkg": False, "stages.scdg": False,
                                                 "stages.pretrain_stage1": False, "stages.pretrain_stage2": False}},
        "grid": {"variant": ["tkre", "golden_only"], "finetune.backbone": ["typ_marker", "genpt"]}}, sort_keys=False))
    trials = plan_trials(load_sweep(path))
    shared = shared_artifacts(trials)
    # one K-shot split for all four; one generation and pre-training run for both TKRE backbones
    assert [len(names) for _, names in shared["split"]] == [4]
    assert [sorted(names) for _, names in shared["edkg"]] == [["grid/000", "grid/001"]]
    assert [len(names) for _, names in shared["stage2"]] == [2] and len(shared["finetune"]) == 4
    r = CliRunner().invoke(_app(), ["sweep", str(path), "--plan"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for needle in ("4 trial(s)", "golden_only", "genpt", "edkg+scdg+s1+s2", "split: 1 for 4 trial(s)",
                   "edkg: 1 for 2 trial(s)", "finetune: 2 Ray Train worker(s) x {CPU 1}", "trial driver: 0.05 CPU"):
        assert needle in r.output, (needle, r.output)


def test_search_trials_share_only_what_their_searched_fields_leave_alone(no_ray):
    trials = plan_trials(load_sweep(packaged_sweeps_dir() / "search_pretrain.yaml"))
    search = [t for t in trials if t.phase.startswith("search")]
    assert len(search) == 6 and len({t.artifacts["edkg"] for t in search}) == 1  # EDKG is not searched
    assert len({t.artifacts["stage2"] for t in search}) == 6  # pretrain.scl.* is: each trial its own
    assert [t.experiment.data.seed for t in trials if t.phase == "evaluate"] == [1, 2, 3, 4, 5]


def _app():
    from tkre.cli import app

    return app

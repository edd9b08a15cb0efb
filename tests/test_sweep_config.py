"""Sweep files: validation errors name file, line and field; shipped sweeps all load; dotted paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkre.errors import ConfigError, DataError
from tkre.sweep.phases import plan_phases
from tkre.sweep.run import preflight
from tkre.sweep.config import experiment_for, grid_points, load_sweep, packaged_sweeps_dir, resolve_sweep_file

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: demo
base:
  data: {dataset: semeval, k: 8}
  finetune: {epochs: 2}
variants:
  tkre: {}
  golden_only: {stages.edkg: false, stages.scdg: false}
grid:
  variant: [tkre, golden_only]
  data.seed: [1, 2]
search:
  space:
    pretrain.scl.tau: {type: loguniform, low: 0.03, high: 0.5}
    finetune.lr: {type: uniform, low: 1.0e-5, high: 5.0e-5}
  num_samples: 3
evaluate: {seeds: [1, 2, 3]}
"""


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_sweep_grid_and_phases(tmp_path):
    sweep = load_sweep(_write(tmp_path, GOOD))
    points = grid_points(sweep)
    assert len(points) == 4 and points[0] == {"variant": "tkre", "data.seed": 1}
    golden = experiment_for(sweep, {"variant": "golden_only", "data.seed": 2})
    assert golden.stages.edkg is False and golden.data.seed == 2 and golden.finetune.epochs == 2
    assert golden.name == "demo-golden_only"
    phases = plan_phases(sweep)
    assert [p.name for p in phases] == ["search-000", "search-001", "search-002", "search-003", "evaluate"]
    assert sweep.search.space["pretrain.scl.tau"].to_optuna().log is True


@pytest.mark.parametrize("bad, line, needle", [
    (GOOD.replace("num_samples: 3", "num_sample: 3"), 15, "search.num_sample: unknown key"),
    (GOOD.replace("num_samples: 3", "num_samples: many"), 15, "search.num_samples"),
    (GOOD.replace("finetune: {epochs: 2}", "finetune: {epochs: two}"), 4, "base.finetune.epochs"),
    (GOOD.replace("finetune: {epochs: 2}", "finetune: {epoch: 2}"), 4, "base.finetune.epoch: unknown key"),
    (GOOD.replace("low: 0.03, high: 0.5", "low: 0.5, high: 0.03"), 13, "inverted range"),
    (GOOD.replace("low: 0.03, high: 0.5", "low: 0.5, high: 0.5"), 13, "empty range"),
    (GOOD.replace("data.seed: [1, 2]", "data.sed: [1, 2]"), 10, "unknown field 'sed' in data"),
    (GOOD.replace("data.seed: [1, 2]", "data.seed: []"), 10, "empty list"),
    (GOOD.replace("[tkre, golden_only]", "[tkre, no_such]"), 9, "unknown variant 'no_such'"),
    (GOOD.replace("stages.edkg: false,", "stages.edgk: false,"), 7, "unknown field 'edgk'"),
    (GOOD.replace("data.seed: [1, 2]", "data.k: [8, abc]"), 10, "data.k"),
    # search-space bounds are checked against the field before Ray starts (issue 14)
    (GOOD.replace("pretrain.scl.tau: {type: loguniform, low: 0.03, high: 0.5}",
                  "pretrain.p_other: {type: uniform, low: 1.2, high: 1.5}"), 13,
     "search.space.pretrain.p_other: 1.2 is not a valid value (pretrain.p_other: Input should be less than or equal to 1"),
    (GOOD.replace("low: 1.0e-5, high: 5.0e-5", "low: -1.0e-5, high: 5.0e-5"), 14,
     "search.space.finetune.lr: -1e-05 is not a valid value (finetune.lr: Input should be greater than 0"),
    (GOOD.replace("finetune.lr: {type: uniform, low: 1.0e-5, high: 5.0e-5}",
                  "finetune.backbone: {type: choice, values: [typ_marker, cnn]}"), 14,
     "search.space.finetune.backbone: 'cnn' is not a valid value"),
    (GOOD.replace("finetune.lr: {type: uniform, low: 1.0e-5, high: 5.0e-5}",
                  "pretrain.scl.negative_span_min: {type: int, low: 1, high: 5}"), 14,
     "negative_span_min must be <= negative_span_max"),
])
def test_bad_sweep_names_file_line_field(tmp_path, bad, line, needle):
    path = _write(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    msg = str(e.value)
    assert f"{path}:{line}:" in msg and needle in msg, msg


def test_empty_search_space_and_test_metric_refused(tmp_path):
    text = GOOD.replace(
        "  space:\n    pretrain.scl.tau: {type: loguniform, low: 0.03, high: 0.5}\n"
        "    finetune.lr: {type: uniform, low: 1.0e-5, high: 5.0e-5}\n", "  space: {}\n")
    with pytest.raises(ConfigError, match="search space is empty"):
        load_sweep(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="dev metrics only"):
        load_sweep(_write(tmp_path, GOOD.replace("num_samples: 3", "num_samples: 3\n  metric: test_micro_f1")))
    with pytest.raises(ConfigError, match="needs both 'low' and 'high'"):
        load_sweep(_write(tmp_path, GOOD.replace("low: 0.03, high: 0.5", "low: 0.03")))
    with pytest.raises(ConfigError, match="needs a 'search' section"):
        load_sweep(_write(tmp_path, "name: x\nevaluate: {seeds: [1]}\n"))


def test_missing_dataset_path_and_bad_storage_fail_before_start(tmp_path):
    text = ("name: x\nbase:\n  data: {dataset: jsonl, path: /no/such/dir}\n  storage_path: "
            f"{tmp_path / 'runs'}\nmin_free_gb: 0\n")
    sweep = load_sweep(_write(tmp_path, text))
    with pytest.raises(DataError, match="/no/such/dir.*does not exist"):
        preflight(sweep, "x.yaml")
    blocker = tmp_path / "file"
    blocker.write_text("")
    sweep = load_sweep(_write(tmp_path, f"name: x\nbase: {{storage_path: {blocker / 'runs'}}}\n"))
    with pytest.raises(ConfigError, match="not writable"):
        preflight(sweep, "x.yaml")


@pytest.mark.parametrize("name", ["quickstart", "paper_table2", "ablation_table3", "synthetic_scale_fig6",
                                  "generators_fig5", "search_pretrain"])
def test_shipped_sweeps_load_from_the_one_folder_the_repository_links_to(name):
    shipped = resolve_sweep_file(name)
    assert shipped.parent == packaged_sweeps_dir() == Path(__file__).resolve().parents[1] / "tkre" / "sweeps"
    top = REPO / "sweeps" / f"{name}.yaml"  # the repository's top-level sweeps/ is a link, not a copy
    assert (REPO / "sweeps").is_symlink() and top.samefile(shipped)
    sweep = load_sweep(shipped)
    assert grid_points(sweep)


def test_quickstart_states_its_cpu_sizing_and_paper_sweeps_use_paper_generation():
    """The quickstart writes its CPU sizing in the file (the defaults are the paper's); the paper's
    sweeps resolve to paper-length explanations and SCDG rounds until every relation has K samples."""
    from tkre.config import read_yaml

    raw, _ = read_yaml(REPO / "sweeps" / "quickstart.yaml")
    base = raw["base"]
    assert base["edkg"]["max_new_tokens"] == 64 and base["edkg"]["generator"]["sampling"]["temperature"] == 0.7
    assert {k: base["scdg"][k] for k in ("samples_per_prompt", "prompt_examples", "max_rounds", "max_new_tokens")} \
        == {"samples_per_prompt": 4, "prompt_examples": 4, "max_rounds": 1, "max_new_tokens": 160}
    assert base["finetune"]["budget"]["steps"] and base["finetune"]["lr"] and base["pretrain"]["stage1"]["lr"]
    for name in ("paper_table2", "ablation_table3"):
        sweep = load_sweep(resolve_sweep_file(name))
        for point in grid_points(sweep):
            cfg = experiment_for(sweep, point)
            assert cfg.edkg.max_new_tokens >= 512 and cfg.scdg.max_rounds >= 5, name
            assert cfg.scdg.generator.model == "meta-llama/Llama-2-13b-chat-hf"


def test_fig5_varies_the_explanation_generator_alone():
    sweep = load_sweep(resolve_sweep_file("generators_fig5"))
    configs = [experiment_for(sweep, p) for p in grid_points(sweep)]
    assert len({c.edkg.generator.model for c in configs}) == 3
    assert len({c.scdg.generator.model_dump_json() for c in configs}) == 1


def _trials(name):
    sweep = load_sweep(resolve_sweep_file(name))
    return [(p, experiment_for(sweep, p)) for p in grid_points(sweep)]


def _golden_only(cfg) -> bool:
    s = cfg.stages
    return not (s.edkg or s.scdg or s.pretrain_stage1 or s.pretrain_stage2) and s.finetune


def test_table2_measures_golden_only_for_both_backbones_on_all_four_datasets():
    """Table 2's baselines are trials of the sweep, beside TKRE, for every dataset x K x backbone cell,
    and every trial resolves to paper-length explanations and SCDG rounds."""
    trials = _trials("paper_table2")
    cells = {(c.data.dataset, c.data.k, c.finetune.backbone) for _, c in trials}
    assert cells == {(d, k, b) for d in ("semeval", "tacred", "tacrev", "retacred") for k in (8, 16, 32)
                     for b in ("typ_marker", "genpt")}
    for variant, want_golden in (("golden_only", True), ("tkre", False)):
        got = [(c.data.dataset, c.data.k, c.finetune.backbone, c.data.seed) for p, c in trials
               if p["variant"] == variant]
        assert len(got) == len(set(got)) == 4 * 3 * 2 * 5, variant
        assert all(_golden_only(c) is want_golden for p, c in trials if p["variant"] == variant)
    for _, c in trials:
        assert c.edkg.max_new_tokens >= 512 and c.scdg.max_rounds >= 5
        assert c.pretrain.encoder == c.finetune.encoder == "FacebookAI/roberta-large"


def test_fig6_grid_reaches_the_zero_point_and_every_amount_once_per_seed():
    trials = _trials("synthetic_scale_fig6")
    asked = sorted((c.synthetic_asked_per_relation(), c.data.seed) for _, c in trials if c.scdg.source == "llm")
    assert asked == sorted((n, s) for n in (0, 1, 4, 8, 16, 32, 64) for s in (1, 2, 3))  # the generator's curve
    zero = [c for _, c in trials if c.synthetic_asked_per_relation() == 0]
    assert zero and all(not c.stages.scdg and c.stages.edkg and c.stages.pretrain_stage2 for c in zero)


def test_fig5_is_the_papers_figure_tacred_genpt_three_explanation_generators():
    trials = _trials("generators_fig5")
    configs = [c for _, c in trials]
    assert {(c.data.dataset, c.finetune.backbone) for c in configs} == {("tacred", "genpt")}
    assert all(c.stages.edkg and c.stages.scdg and c.stages.pretrain_stage1 and c.stages.pretrain_stage2
               for c in configs)
    assert {(c.edkg.generator.backend, c.edkg.generator.model) for c in configs} == {
        ("vllm", "meta-llama/Llama-2-13b-chat-hf"), ("openai", "gpt-3.5-turbo"), ("vllm", "Qwen/Qwen2.5-7B-Instruct")}
    scdg = {c.scdg.generator.model_dump_json() for c in configs}
    assert len(scdg) == 1 and '"meta-llama/Llama-2-13b-chat-hf"' in scdg.pop()
    # one explanation generator per variant, each over the same K x seed cells
    per_gen = {}
    for p, c in trials:
        per_gen.setdefault(c.edkg.generator.model, set()).add((c.data.k, c.data.seed))
    assert len({frozenset(v) for v in per_gen.values()}) == 1


def test_explicit_points_follow_the_grid_and_are_checked(tmp_path):
    text = GOOD.split("search:")[0] + "points:\n  - {variant: golden_only, data.seed: 7}\n"
    sweep = load_sweep(_write(tmp_path, text))
    points = grid_points(sweep)
    assert len(points) == 5 and points[-1] == {"variant": "golden_only", "data.seed": 7}
    assert experiment_for(sweep, points[-1]).stages.edkg is False
    for bad, needle in (("{variant: nope}", "points[0].variant: unknown variant 'nope'"),
                        ("{data.sed: 1}", "points[0].data.sed: unknown field 'sed' in data"),
                        ("{data.k: 0}", "points[0]")):
        path = _write(tmp_path, GOOD.split("search:")[0] + f"points:\n  - {bad}\n")
        with pytest.raises(ConfigError) as e:
            load_sweep(path)
        assert f"{path}:12: " in str(e.value) and needle in str(e.value), str(e.value)

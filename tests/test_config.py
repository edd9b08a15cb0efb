"""Typed configs: paper defaults, validation naming the bad field, YAML line numbers."""

from pathlib import Path

import pytest

from tkre.config import (DataConfig, ExperimentConfig, FinetuneConfig, PretrainConfig, load_config,
                         validate_config)
from tkre.errors import ConfigError


def test_paper_defaults():
    p = PretrainConfig()
    assert (p.p_relation, p.p_entity, p.p_other, p.tau, p.lambda1, p.lambda2) == (0.8, 0.5, 0.2, 0.1, 1.0, 1.0)
    f = FinetuneConfig()
    assert (f.lr, f.batch_size, f.epochs) == (3e-5, 32, 10)
    assert DataConfig().k == 8 and DataConfig().protocol == "knowprompt"


@pytest.mark.parametrize("model, data, field", [
    (PretrainConfig, {"p_relation": 1.5}, "p_relation"),
    (PretrainConfig, {"tau": 0}, "tau"),
    (DataConfig, {"dataset": "fewrel"}, "dataset"),
    (DataConfig, {"k": 0}, "k"),
    (FinetuneConfig, {"backbone": "cnn"}, "backbone"),
])
def test_validation_names_field(model, data, field):
    with pytest.raises(ConfigError) as e:
        validate_config(data, model, "cli")
    assert f"cli: {field}:" in str(e.value)


def test_dataset_needs_path():
    with pytest.raises(ConfigError, match="needs 'path'"):
        validate_config({"dataset": "tacred"}, DataConfig)


def test_yaml_errors_name_file_line_field(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: x\ndata:\n  dataset: semeval\n  k: 8\npretrain:\n  tau: -1\n  p_entity: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ExperimentConfig)
    assert f"{f}:6: pretrain.tau:" in str(e.value)
    f.write_text("data:\n  dataset: semeval\n  kk: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ExperimentConfig)
    assert f"{f}:3: data.kk: unknown key" in str(e.value)
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(f, ExperimentConfig)


def test_yaml_section_loading(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("pretrain:\n  tau: 0.05\n  stage1:\n    epochs: 2\n")
    cfg = load_config(f, PretrainConfig, section="pretrain")
    assert cfg.tau == 0.05 and cfg.stage1.epochs == 2 and cfg.stage2.epochs == 3


def test_finetune_warmup_is_typ_markers_and_names_its_source():
    field = FinetuneConfig.model_fields["warmup_ratio"]
    assert FinetuneConfig().warmup_ratio == 0.1
    assert "TYP Marker" in field.description and "reference code" in field.description


def test_different_pretrain_and_finetune_encoders_are_a_config_error_unless_allowed(tmp_path):
    data = {"pretrain": {"encoder": "FacebookAI/roberta-large"}, "finetune": {"encoder": "embedded:minilm"}}
    with pytest.raises(ConfigError) as e:
        validate_config(data, ExperimentConfig, "exp.yaml")
    msg = str(e.value)
    assert "pretrain.encoder" in msg and "finetune.encoder" in msg and "allow_different_encoder" in msg
    assert "roberta-large" in msg and "embedded:minilm" in msg
    # the same error from a YAML file, with the file named
    f = tmp_path / "exp.yaml"
    f.write_text("pretrain:\n  encoder: FacebookAI/roberta-large\n")
    with pytest.raises(ConfigError, match=r"exp.yaml.*pretrain.encoder"):
        load_config(f, ExperimentConfig)
    ok = validate_config({**data, "finetune": {"encoder": "embedded:minilm", "allow_different_encoder": True}},
                         ExperimentConfig)
    assert ok.pretrain.encoder != ok.finetune.encoder
    same = validate_config({"pretrain": {"encoder": "x/y"}, "finetune": {"encoder": "x/y"}}, ExperimentConfig)
    assert same.finetune.encoder == "x/y"


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweeps_fine_tune_the_encoder_they_pre_train(path):
    from tkre.sweep_config import experiment_for, grid_points, load_sweep

    sweep = load_sweep(path)
    for point in grid_points(sweep):
        cfg = experiment_for(sweep, point)  # validates the trial's ExperimentConfig
        assert cfg.pretrain.encoder == cfg.finetune.encoder and not cfg.finetune.allow_different_encoder

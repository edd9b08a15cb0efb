"""Typed configs: paper defaults, validation naming the bad field, YAML line numbers."""

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

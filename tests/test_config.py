"""Typed configs: paper defaults, validation naming the bad field, YAML line numbers."""

from pathlib import Path

import pytest

from tkre.config import (DataConfig, ExperimentConfig, FinetuneConfig, PretrainConfig, SCDGConfig, load_config,
                         validate_config)
from tkre.errors import ConfigError


def test_paper_defaults():
    p = PretrainConfig()
    assert (p.p_relation, p.p_entity, p.p_other) == (0.8, 0.5, 0.2)
    assert (p.scl.tau, p.scl.lambda1, p.scl.lambda2, p.scl.negative_span_min, p.scl.negative_span_max) == \
        (0.1, 1.0, 1.0, 1, 3)
    f = FinetuneConfig(encoder="FacebookAI/roberta-large")  # the embedded encoder has its own recipe
    assert (f.lr, f.batch_size, f.epochs) == (3e-5, 32, 10)
    assert DataConfig().k == 8 and DataConfig().protocol == "knowprompt"


@pytest.mark.parametrize("model, data, field", [
    (PretrainConfig, {"p_relation": 1.5}, "p_relation"),
    (PretrainConfig, {"scl": {"tau": 0}}, "scl.tau"),
    (PretrainConfig, {"scl": {"negative_span_min": 4}}, "scl"),
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
    f.write_text("name: x\ndata:\n  dataset: semeval\n  k: 8\npretrain:\n  scl:\n    tau: -1\n  p_entity: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ExperimentConfig)
    assert f"{f}:7: pretrain.scl.tau:" in str(e.value)
    f.write_text("data:\n  dataset: semeval\n  kk: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ExperimentConfig)
    assert f"{f}:3: data.kk: unknown key; did you mean k?" in str(e.value)
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(f, ExperimentConfig)


def test_unknown_yaml_key_gets_a_hint(tmp_path):
    f = tmp_path / "exp.yaml"
    cases = [("finetune:\n  epoch: 2\n", "2: finetune.epoch: unknown key; did you mean epochs?"),  # a misspelling
             ("pretrain:\n  tau: 0.1\n", "2: pretrain.tau: unknown key; did you mean scl.tau?"),  # one level too high
             ("zzz: 1\n", "1: zzz: unknown key (known: name, data, stages,")]  # nothing close: what is allowed
    for text, expected in cases:
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(f, ExperimentConfig)
        assert f"{f}:{expected}" in str(e.value)


def test_yaml_section_loading(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("pretrain:\n  scl: {tau: 0.05}\n  stage1:\n    epochs: 2\n")
    cfg = load_config(f, PretrainConfig, section="pretrain")
    assert cfg.scl.tau == 0.05 and cfg.stage1.epochs == 2 and cfg.stage2.epochs == 3


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
    from tkre.sweep.config import experiment_for, grid_points, load_sweep

    sweep = load_sweep(path)
    for point in grid_points(sweep):
        cfg = experiment_for(sweep, point)  # validates the trial's ExperimentConfig
        assert cfg.pretrain.encoder == cfg.finetune.encoder and not cfg.finetune.allow_different_encoder

# --------------------------------------------------------------------------- generation sections

def test_generation_defaults_are_the_papers():
    """EDKG: paper-length explanations (reference code: 1024 new tokens); SCDG: rounds until every
    relation has its samples (reference code: 10 attempts), 8 samples per prompt with 128 new tokens
    each (reference code: 1024 tokens for eight samples), K asked per relation."""
    e = ExperimentConfig()
    assert e.edkg.max_new_tokens >= 512 and e.edkg.prompt is None
    assert SCDGConfig().generator is None and SCDGConfig().samples_per_relation is None  # the section's own
    s = e.scdg  # in an experiment: EDKG's generator, K samples per relation, filled in when built
    assert s.generator == e.edkg.generator and s.generator is not e.edkg.generator and s.samples_per_relation == 8
    assert (s.max_rounds, s.samples_per_prompt, s.prompt_examples) == (10, 8, 8)
    assert s.new_tokens == s.tokens_per_sample * s.samples_per_prompt == 1024
    assert s.model_copy(update={"samples_per_prompt": 3}).new_tokens == 3 * s.tokens_per_sample  # sized for asks
    assert s.model_copy(update={"max_new_tokens": 160}).new_tokens == 160
    assert e.edkg.generator.sampling.temperature == 0.1  # reference code
    assert e.synthetic_asked_per_relation() == e.data.k == 8
    assert e.model_copy(update={"stages": e.stages.model_copy(update={"scdg": False})}).synthetic_asked_per_relation() == 0


def test_scdg_inherits_edkg_generator_unless_set():
    e = validate_config({"edkg": {"generator": {"backend": "openai", "model": "gpt-3.5-turbo",
                                                "sampling": {"temperature": 0.3}}}}, ExperimentConfig)
    assert e.scdg.generator == e.edkg.generator  # the whole section, not just the model
    own = validate_config({"edkg": {"generator": {"model": "a"}}, "scdg": {"generator": {"model": "b"}}},
                          ExperimentConfig)
    assert own.scdg.generator.model == "b" and own.edkg.generator.model == "a"
    assert [g.model for g in own.active_generators()] == ["a", "b"]
    with pytest.raises(ConfigError, match="generation"):
        validate_config({"generation": {"model": "x"}}, ExperimentConfig, "old.yaml")  # the old section is gone
    with pytest.raises(ConfigError, match="synthetic_per_relation"):
        validate_config({"synthetic_per_relation": 4}, FinetuneConfig)  # renamed synthetic_cap_per_relation


def _keys(cfg: ExperimentConfig) -> tuple[str, str]:
    from tkre.store.artifacts import artifact_key
    from tkre.pipeline import edkg_key_config, scdg_key_config

    scdg = scdg_key_config(cfg.scdg)
    return artifact_key("edkg", edkg_key_config(cfg.edkg), {}), artifact_key("scdg", scdg, {})


def test_edkg_generator_varies_alone_in_artifact_keys():
    from tkre.sweep.config import apply_overrides

    own = ExperimentConfig.model_validate({"scdg": {"generator": {"backend": "vllm", "model": "llama"}}}).model_dump()
    e1, s1 = _keys(apply_overrides(own, {"edkg.generator.model": "qwen"}))
    e2, s2 = _keys(apply_overrides(own, {"edkg.generator.model": "gpt"}))
    assert e1 != e2 and s1 == s2  # SCDG has its own generator: its artifact is shared
    # unset scdg.generator inherits EDKG's, so the same change moves both keys (overrides go on the
    # input: a built config's dump has EDKG's generator copied into scdg, and K into samples_per_relation)
    inherit: dict = {}
    e3, s3 = _keys(apply_overrides(inherit, {"edkg.generator.model": "qwen"}))
    e4, s4 = _keys(apply_overrides(inherit, {"edkg.generator.model": "gpt"}))
    assert e3 != e4 and s3 != s4
    # SCDG's own settings never move the EDKG key, and throughput settings move neither
    e5, s5 = _keys(apply_overrides(inherit, {"scdg.samples_per_relation": 16, "scdg.max_rounds": 3}))
    assert e5 == _keys(ExperimentConfig())[0] and s5 != _keys(ExperimentConfig())[1]
    assert _keys(apply_overrides(inherit, {"edkg.generator.concurrency": 4, "edkg.generator.batch_size": 2,
                                           "edkg.generator.price_per_m_input_tokens": 1.0})) == _keys(
        ExperimentConfig())
    # EDKG's budget moves only EDKG's key
    e6, s6 = _keys(apply_overrides(own, {"edkg.max_new_tokens": 64}))
    assert e6 != _keys(ExperimentConfig.model_validate(own))[0] and s6 == s1

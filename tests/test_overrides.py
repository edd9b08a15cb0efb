"""One override mechanism (dotted key=value) for sweep points, CLI flags and YAML merges."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tkre.config import ExperimentConfig, FinetuneConfig, GeneratorConfig, PretrainConfig
from tkre.errors import ConfigError
from tkre.overrides import apply_overrides, load_with_overrides, parse_assignments, section_of


def test_dotted_overrides_set_nested_fields_and_validate_once():
    cfg = apply_overrides({"data": {"k": 16}}, {"pretrain.scl.tau": 0.05, "finetune.resources.num_workers": 2,
                                                "data": {"seed": 3}})
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.pretrain.scl.tau, cfg.finetune.resources.num_workers, cfg.data.k, cfg.data.seed) == (0.05, 2, 16, 3)
    with pytest.raises(ConfigError, match=r"src: pretrain.scl.tua: unknown field 'tua' in pretrain.scl"):
        apply_overrides({}, {"pretrain.scl.tua": 1}, source="src")
    with pytest.raises(ConfigError, match=r"'tua' in pretrain.scl; did you mean pretrain.scl.tau\?"):  # misspelt
        apply_overrides({}, {"pretrain.scl.tua": 1}, source="src")
    with pytest.raises(ConfigError, match=r"'foo' in the config \(known: name, data,"):  # nothing close
        apply_overrides({}, {"foo.x": 1}, source="src")
    with pytest.raises(ConfigError, match=r"did you mean pretrain.scl.tau\?"):  # a field that moved into a section
        apply_overrides({}, {"pretrain.tau": 0.1}, source="src")
    with pytest.raises(ConfigError, match=r"src: data.k.x: data.k is a value, not a section"):
        apply_overrides({}, {"data.k.x": 1}, source="src")
    with pytest.raises(ConfigError, match=r"src: pretrain.scl.tau: Input should be greater than 0"):
        apply_overrides({}, {"pretrain.scl.tau": -1}, source="src")
    # another model than the experiment: the same mechanism
    assert apply_overrides({}, {"sampling.top_p": 0.5}, GeneratorConfig).sampling.top_p == 0.5


def test_assignments_are_yaml_scalars():
    assert parse_assignments(["a.b=0.5", "c=false", "d=x", "e=[1, 2]", "f="]) == \
        {"a.b": 0.5, "c": False, "d": "x", "e": [1, 2], "f": None}
    # YAML reads 1e-4 as a string; the field's validation turns it into the number
    assert apply_overrides({}, parse_assignments(["finetune.lr=1e-4"])).finetune.lr == 1e-4
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_assignments(["novalue"])


def test_which_section_is_this_yaml_is_guessed_once():
    # an experiment file (it has the section, or another experiment section) -> its section
    assert section_of({"finetune": {"lr": 1}, "data": {}}, FinetuneConfig, "finetune") == ({"lr": 1}, ("finetune",))
    assert section_of({"data": {"k": 8}}, FinetuneConfig, "finetune") == ({}, ("finetune",))
    # a file that is the model itself (even with a key named like an experiment section it owns)
    assert section_of({"lr": 1, "resources": {}}, FinetuneConfig, "finetune") == ({"lr": 1, "resources": {}}, ())
    assert section_of({"stage1": {"epochs": 1}}, PretrainConfig, "pretrain")[1] == ()


def test_yaml_file_then_options_errors_name_file_line_field(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("data: {k: 8}\nfinetune:\n  lr: 1.0e-4\n  epochs: 4\n")
    cfg = load_with_overrides(exp, FinetuneConfig, section="finetune",
                              overrides={"epochs": 2, "batch_size": None, "resources.num_workers": 2})
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.resources.num_workers) == (1e-4, 2, 32, 2)
    plain = tmp_path / "ft.yaml"
    plain.write_text("lr: 2.0e-5\n")
    assert load_with_overrides(plain, FinetuneConfig, section="finetune").lr == 2e-5
    exp.write_text("data: {k: 8}\nfinetune:\n  lr: 1.0e-4\n  epochs: zero\n")
    with pytest.raises(ConfigError, match=rf"{exp}:4: finetune.epochs:"):
        load_with_overrides(exp, FinetuneConfig, section="finetune")
    exp.write_text("finetune: {lr: 1.0e-4}\n")
    with pytest.raises(ConfigError, match=r"\+ options: epochs: Input should be greater than or equal to 1"):
        load_with_overrides(exp, FinetuneConfig, section="finetune", overrides={"epochs": 0})


def test_cli_flags_and_set_go_through_the_same_overrides(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("finetune:\n  lr: 1.0e-4\n")
    r = subprocess.run([sys.executable, "-m", "tkre.cli", "finetune", "--config", str(exp), "--epochs", "0",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "epochs: Input should be greater than or equal to 1" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "tkre.cli", "pretrain", "--config", str(exp), "--set",
                        "scl.tau=-1", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "scl.tau: Input should be greater than 0" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_generate_command_builds_its_section_as_an_experiment(tmp_path):
    """`tkre generate synthetic`: SCDG asks K (the --k option's) samples per relation and uses EDKG's
    generator unless the file or an option says otherwise: the section comes out of an experiment
    built with the command's data options, every default filled in."""
    from tkre.cli.generate import _generation_inputs

    f = tmp_path / "gen.yaml"
    f.write_text("edkg:\n  generator: {model: some/model, sampling: {temperature: 0.3}}\n")
    _, cfg = _generation_inputs("scdg", "semeval", None, None, 4, 1, "knowprompt", f, {}, {})
    assert cfg.samples_per_relation == 4 and cfg.generator.model == "some/model"
    assert cfg.generator.sampling.temperature == 0.3
    _, cfg = _generation_inputs("scdg", "semeval", None, None, 4, 1, "knowprompt", f, {"model": "other"},
                                {"samples_per_relation": 2})
    assert cfg.samples_per_relation == 2 and cfg.generator.model == "other"

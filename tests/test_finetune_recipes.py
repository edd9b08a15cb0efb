"""Encoder-fitting optimisation: an embedded encoder's recipe replaces the paper's lr / epochs /
batch size only when the user set none of them, and `tkre finetune` says so in one line.
No training here (the CLI's training call is replaced by a recorder); the real run is the done-when
check of issue 13 (`tkre finetune --backbone typ_marker --dataset semeval --k 8 --seed 1`)."""

from __future__ import annotations

import pytest

from tkre.config import EMBEDDED_ENCODER, FinetuneConfig, load_config
from tkre.finetune.encoder_recipes import RECIPES, apply_encoder_recipe, recipe_for


def test_recipe_applies_to_the_embedded_encoder_when_nothing_is_set():
    cfg, note = apply_encoder_recipe(FinetuneConfig())
    recipe = RECIPES[EMBEDDED_ENCODER]
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (recipe.lr, recipe.epochs, recipe.batch_size) == (1e-4, 12, 16)
    assert note and "\n" not in note and EMBEDDED_ENCODER in note and "lr 0.0001" in note
    assert apply_encoder_recipe(cfg) == (cfg, None)  # applied once: the fields now count as set
    assert FinetuneConfig().lr == 3e-5  # the defaults stay the paper's


@pytest.mark.parametrize("given", [{"lr": 3e-5}, {"epochs": 10}, {"batch_size": 32}, {"lr": 2e-4, "epochs": 3}])
def test_any_value_the_user_set_switches_the_recipe_off(given):
    cfg = FinetuneConfig(**given)  # even the paper's own value, set explicitly, wins
    assert recipe_for(cfg) is None
    out, note = apply_encoder_recipe(cfg)
    assert out is cfg and note is None


def test_no_recipe_for_the_papers_encoders_or_a_checkpoint():
    for encoder in ("FacebookAI/roberta-large", "/runs/stage2/checkpoint"):
        cfg, note = apply_encoder_recipe(FinetuneConfig(encoder=encoder))
        assert note is None and (cfg.lr, cfg.epochs, cfg.batch_size) == (3e-5, 10, 32)


def test_fields_set_survive_yaml_loading(tmp_path):
    f = tmp_path / "ft.yaml"
    f.write_text("finetune:\n  epochs: 4\n")
    assert recipe_for(load_config(f, FinetuneConfig, section="finetune")) is None
    f.write_text("finetune:\n  max_length: 96\n")
    assert recipe_for(load_config(f, FinetuneConfig, section="finetune")) is RECIPES[EMBEDDED_ENCODER]


@pytest.fixture
def recorded(monkeypatch):
    """Replace the CLI's training call by a recorder of the config it gets."""
    seen = {}

    def fake_finetune_dataset(data, cfg, **kw):
        seen["cfg"] = cfg
        return {"best_epoch": 0, "dev_micro_f1": 0.5, "test_micro_f1": 0.5, "test_macro_f1": 0.4,
                "checkpoint": "ck", "counts": {"train_windowed": 0, "test_windowed": 0,
                                               "test_unseen_relation_examples": 0}}

    monkeypatch.setattr("tkre.finetune.command.finetune_dataset", fake_finetune_dataset)
    return seen


def _invoke(args):
    from typer.testing import CliRunner

    from tkre.cli import app

    return CliRunner().invoke(app, ["finetune", "--dataset", "semeval", "--k", "8", "--seed", "1", *args],
                              terminal_width=100)


def test_cli_without_optimisation_flags_uses_the_recipe_and_prints_one_line(ray_local, recorded, tmp_path):
    r = _invoke(["--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    cfg = recorded["cfg"]
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.warmup_ratio) == (1e-4, 12, 16, 0.1)
    lines = [ln for ln in r.output.splitlines() if "recipe" in ln]
    assert len(lines) == 1 and "embedded:minilm" in lines[0] and "12 epochs" in lines[0] and "batch 16" in lines[0]


@pytest.mark.parametrize("flag, field, value", [("--lr", "lr", 3e-5), ("--epochs", "epochs", 3)])
def test_cli_with_one_optimisation_flag_keeps_the_papers_values(ray_local, recorded, tmp_path, flag, field, value):
    r = _invoke([flag, str(value), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    cfg = recorded["cfg"]
    assert getattr(cfg, field) == value and "recipe" not in r.output
    assert {k: getattr(cfg, k) for k in ("lr", "epochs", "batch_size") if k != field} == \
        {k: v for k, v in {"lr": 3e-5, "epochs": 10, "batch_size": 32}.items() if k != field}


def test_cli_config_file_setting_lr_keeps_the_papers_values(ray_local, recorded, tmp_path):
    f = tmp_path / "ft.yaml"
    f.write_text("finetune:\n  lr: 5.0e-5\n")
    r = _invoke(["--config", str(f), "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert (recorded["cfg"].lr, recorded["cfg"].epochs) == (5e-5, 10) and "recipe" not in r.output


def test_sweep_trials_keep_which_fields_were_set():
    """A sweep point's experiment (and its JSON as shipped to the trial) still says whether the user
    set lr/epochs/batch_size, so the pipeline applies the recipe exactly when `tkre finetune` would."""
    from tkre.config import ExperimentConfig
    from tkre.sweep.config import SweepConfig, experiment_for

    sweep = SweepConfig.model_validate({"name": "s", "base": {"finetune": {"max_length": 96}}})
    cfg = experiment_for(sweep, {})
    assert recipe_for(cfg.finetune) is RECIPES[EMBEDDED_ENCODER]
    shipped = ExperimentConfig.model_validate_json(cfg.model_dump_json(exclude_unset=True))
    assert recipe_for(shipped.finetune) is RECIPES[EMBEDDED_ENCODER]
    assert recipe_for(experiment_for(sweep, {"finetune.lr": 5e-5}).finetune) is None

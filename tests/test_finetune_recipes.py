"""Encoder-fitting optimisation: an embedded encoder's recipe replaces the paper's lr / epochs /
batch size only when the input (YAML, overrides, options) set none of them; it is filled in when the
config is built, so what runs is what the config holds, and `tkre finetune` says so in one line.
No training here (the CLI's training call is replaced by a recorder); the real run is the done-when
check of issue 13 (`tkre finetune --backbone typ_marker --dataset semeval --k 8 --seed 1`)."""

from __future__ import annotations

import pickle

import pytest

from tkre.config import EMBEDDED_ENCODER, ENCODER_RECIPES, ExperimentConfig, FinetuneConfig, load_config

PAPER = (3e-5, 10, 32)


def _optim(cfg: FinetuneConfig) -> tuple:
    return cfg.lr, cfg.epochs, cfg.batch_size


def test_recipe_fills_the_embedded_encoders_values_when_nothing_is_set():
    cfg = FinetuneConfig()
    recipe = ENCODER_RECIPES[EMBEDDED_ENCODER]
    assert _optim(cfg) == (recipe.lr, recipe.epochs, recipe.batch_size) == (1e-4, 12, 16)
    note = cfg.recipe_note()
    assert note and "\n" not in note and EMBEDDED_ENCODER in note and "lr 0.0001" in note
    assert tuple(FinetuneConfig.model_fields[f].default for f in ("lr", "epochs", "batch_size")) == PAPER
    # built once: a full dump read back (JSON, a dict) or a pickle (Ray) holds the same values
    assert FinetuneConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert FinetuneConfig.model_validate(cfg.model_dump()) == pickle.loads(pickle.dumps(cfg)) == cfg


@pytest.mark.parametrize("given", [{"lr": 3e-5}, {"epochs": 10}, {"batch_size": 32}, {"lr": 2e-4, "epochs": 3}])
def test_any_value_the_user_set_switches_the_recipe_off(given):
    cfg = FinetuneConfig(**given)  # even the paper's own value, set explicitly, wins
    assert _optim(cfg) == tuple(given.get(f, v) for f, v in zip(("lr", "epochs", "batch_size"), PAPER))
    assert cfg.recipe_note() is None
    exp = ExperimentConfig.model_validate({"finetune": given})
    assert exp.finetune == cfg


def test_no_recipe_for_the_papers_encoders_or_a_checkpoint():
    for encoder in ("FacebookAI/roberta-large", "/runs/stage2/checkpoint"):
        cfg = FinetuneConfig(encoder=encoder)
        assert cfg.recipe_note() is None and _optim(cfg) == PAPER


def test_recipe_follows_the_yaml_as_written(tmp_path):
    f = tmp_path / "ft.yaml"
    f.write_text("finetune:\n  epochs: 4\n")
    assert _optim(load_config(f, FinetuneConfig, section="finetune")) == (3e-5, 4, 32)
    f.write_text("finetune:\n  max_length: 96\n")
    assert _optim(load_config(f, FinetuneConfig, section="finetune")) == (1e-4, 12, 16)


def test_tkre_run_overrides_switch_the_recipe_off(tmp_path):
    """`tkre run exp.yaml --set finetune.epochs=3`: the option counts as the user's, like the file."""
    from tkre.overrides import load_with_overrides

    f = tmp_path / "exp.yaml"
    f.write_text("finetune:\n  max_length: 96\n")
    assert _optim(load_with_overrides(f, ExperimentConfig).finetune) == (1e-4, 12, 16)
    assert _optim(load_with_overrides(f, ExperimentConfig, overrides={"finetune.epochs": 3}).finetune) == \
        (3e-5, 3, 32)


@pytest.fixture
def recorded(monkeypatch):
    """Replace the CLI's training call by a recorder of the config it gets."""
    seen = {}

    def fake_finetune_dataset(data, cfg, **kw):
        seen["cfg"] = cfg
        return {"best_epoch": 0, "dev_micro_f1": 0.5, "test_micro_f1": 0.5, "test_macro_f1": 0.4,
                "budget": cfg.budget.describe(cfg.epochs), "epochs_run": 1, "best_step": 1, "steps": 1,
                "stopped_on_patience": False,
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


def test_sweep_trials_get_the_recipe_as_built():
    """A sweep point's experiment holds the recipe's values (or the user's), and the trial hands that
    object to its pipeline as it is: its artifact keys do not depend on what survives a trip."""
    from tkre.pipeline import stage_keys
    from tkre.sweep.config import SweepConfig, experiment_for

    sweep = SweepConfig.model_validate({"name": "s", "base": {"finetune": {"max_length": 96}}})
    cfg = experiment_for(sweep, {})
    assert _optim(cfg.finetune) == (1e-4, 12, 16)
    assert _optim(experiment_for(sweep, {"finetune.lr": 5e-5}).finetune) == (5e-5, 10, 32)
    for shipped in (pickle.loads(pickle.dumps(cfg)), ExperimentConfig.model_validate_json(cfg.model_dump_json())):
        assert shipped == cfg and stage_keys(shipped, "data") == stage_keys(cfg, "data")
